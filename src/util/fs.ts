/**
 * File-system helpers shared by everything that reads user files or writes results: errors a
 * user can fix become MinigptErrors, and directories are replaced atomically.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MinigptError } from '../errors.js';

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** fsyncs a directory, so renames inside it survive a crash. */
export async function syncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes and fsyncs a file. */
export async function writeFileSynced(path: string, bytes: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A user-fixable I/O failure (permissions, full or read-only disk) as a MinigptError; anything else unchanged. */
export function ioError(e: unknown, what: string): Error {
  if (e instanceof MinigptError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied'
    : code === 'ENOSPC' ? 'the disk is full'
    : code === 'EROFS' ? 'the file system is read-only'
    : code === 'ENOTDIR' ? 'a path component is not a directory'
    : null;
  return why === null ? (e instanceof Error ? e : new Error(String(e))) : new MinigptError(`cannot ${what}: ${why}`);
}

/** `.NAME.tmp-PID-RANDOM` / `.NAME.old-PID-RANDOM` beside `dir`: where atomic replacement stages. */
export function siblingPath(dir: string, tag: 'tmp' | 'old'): string {
  return join(dirname(dir), `.${basename(dir)}.${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Makes the finished directory `tmp` (a siblingPath of `dir`) become `dir`: fsync, move any old
 * `dir` aside, rename, fsync the parent, delete the old one. A crash leaves the old directory or
 * the new one (at worst the old one under its `.old-` name, which checkpoint loading recovers).
 * On failure the old directory is put back and `tmp` removed.
 */
export async function commitDir(tmp: string, dir: string): Promise<void> {
  const old = siblingPath(dir, 'old');
  try {
    await syncDir(tmp);
    if (await exists(dir)) await rename(dir, old);
    await rename(tmp, dir);
    await syncDir(dirname(dir));
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    if (!(await exists(dir)) && (await exists(old))) await rename(old, dir).catch(() => {});
    throw e;
  }
  await rm(old, { recursive: true, force: true });
}
