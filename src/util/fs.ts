/**
 * File-system helpers shared by everything that reads user files or writes results: errors a
 * user can fix become MinigptErrors, and directories are replaced atomically.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync, rmSync } from 'node:fs';
import { cp, link, lstat, mkdir, open, readFile, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
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

/**
 * Writes and fsyncs a file: one buffer or string, or the file's parts in order (a large file
 * written from views of the arrays it holds, without joining them into one more copy first).
 */
export async function writeFileSynced(path: string, bytes: Uint8Array | string | readonly Uint8Array[]): Promise<void> {
  const fh = await open(path, 'w');
  try {
    if (Array.isArray(bytes)) {
      for (const part of bytes as readonly Uint8Array[]) {
        for (let done = 0; done < part.length;) done += (await fh.write(part, done, part.length - done)).bytesWritten;
      }
    } else {
      await fh.writeFile(bytes as Uint8Array | string);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A user-fixable I/O failure (permissions, full or read-only disk) as a MinigptError; anything else unchanged. */
export function ioError(e: unknown, what: string): Error {
  if (e instanceof MinigptError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const reading = /^(read|open|stat|scandir|load)\b/.test(what);
  const why = code === 'EACCES' || code === 'EPERM' ? (reading ? 'permission denied; check its permissions' : 'permission denied; check the permissions of the folder, or write somewhere else')
    : code === 'ENOSPC' || code === 'EDQUOT' ? 'the disk is full; free some space, or write somewhere else'
    : code === 'EROFS' ? 'the file system is read-only; write somewhere else'
    : code === 'ENOTDIR' ? 'a path component is a file, not a folder; check the path'
    : code === 'EISDIR' ? 'it is a folder; give a file name'
    : code === 'ELOOP' ? 'a symbolic link in the path leads back to itself; check the path'
    : code === 'ENAMETOOLONG' ? 'the path is too long for the file system'
    : null;
  return why === null ? (e instanceof Error ? e : new Error(String(e))) : new MinigptError(`cannot ${what}: ${why}`);
}

/**
 * A file-system error that reached the CLI's top level without being given words (an errno error
 * from some stat or mkdir: a symlink loop, a file where a folder should be...), as a MinigptError
 * naming the operation and the path; null for any other error (a bug).
 */
export function fsErrorForUser(e: unknown): MinigptError | null {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string' || typeof err.syscall !== 'string') return null;
  const path = err.path ?? '';
  const what = `${err.syscall}${path ? ` ${path}` : ''}`;
  if (err.syscall === 'uv_cwd') return new MinigptError('the current folder no longer exists (deleted or moved while in it); cd into a folder that exists and run the command again');
  if (err.code === 'ENOENT') return new MinigptError(`cannot ${what}: no such file or folder`);
  if (err.code === 'EEXIST' && err.syscall === 'mkdir') return new MinigptError(`cannot ${what}: a file is there, where a folder should be; check the path`);
  const mapped = ioError(e, what);
  return mapped instanceof MinigptError ? mapped : null;
}

/**
 * mkdir -p, one folder at a time from the first that is missing, so a failure is the real one
 * (Node's recursive mkdir reports a read-only file system as ENOENT, and loops forever on a
 * path under /proc).
 */
export async function makeDirs(path: string): Promise<void> {
  const missing: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    const info = await stat(dir).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : Promise.reject(e)));
    if (info) break;
    missing.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing) {
    try {
      await mkdir(dir);
    } catch (e) {
      // Made meanwhile by someone else: fine when it is a folder.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir)).isDirectory()) throw e;
    }
  }
}

/**
 * Writes a file so that it is whole or absent: a temporary sibling, fsynced, then renamed over
 * `path`; a failure (full disk...) leaves the old file untouched and removes the temporary one.
 * Its folder is created. A symlink is followed, never replaced: its target is written (a link
 * into a shared folder). /dev/stdout and /dev/stderr are written through the process's own
 * streams; something else that is not a regular file (a named pipe) is written directly, and a
 * link that leads nowhere yet, through the link.
 * Errors a user can fix are MinigptErrors (see ioError).
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const fd = standardStream(path);
  if (fd !== undefined) {
    // Through the process's own stream, whatever it is: a file the shell redirected there keeps
    // what came before (renaming over it would lose that); a socket cannot be opened by path.
    const out = fd === 1 ? process.stdout : process.stderr;
    await new Promise<void>((done, fail) => out.write(bytes, (e) => (e ? fail(ioError(e, `write ${path}`)) : done())));
    return;
  }
  const isLink = (await lstat(path).catch(() => null))?.isSymbolicLink() ?? false;
  const target = isLink ? await realpath(path).catch(() => null) : path;
  const info = target === null ? null : await stat(target).catch(() => null);
  const tmp = siblingPath(target ?? path, 'tmp');
  try {
    if (target === null || (info && !info.isFile())) {
      const fh = await open(path, 'w');
      try {
        await fh.writeFile(bytes);
      } finally {
        await fh.close();
      }
      return;
    }
    await makeDirs(dirname(target));
    await writeFileSynced(tmp, bytes);
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw ioError(e, `write ${path}`);
  } finally {
    stagingDone(tmp);
  }
  await removeStaleTemporaries(target);
}

/** 1 or 2 when `path` names this process's stdout or stderr (/dev/stdout, /dev/fd/1, /proc/self/fd/2...). */
export function standardStream(path: string): 1 | 2 | undefined {
  const m = /^\/(?:dev\/(stdout|stderr)|dev\/fd\/([12])|proc\/self\/fd\/([12]))$/.exec(resolve(path));
  if (!m) return undefined;
  return m[1] === 'stdout' || m[2] === '1' || m[3] === '1' ? 1 : 2;
}

/**
 * `.NAME.tmp-PID-*` files and folders beside `path` left by a process that is gone (killed while
 * writing it), and with `andOld`, `.NAME.old-PID-*` ones (a replaced version, once a newer one is
 * in place).
 */
async function removeStaleTemporaries(path: string, andOld = false): Promise<void> {
  const prefixes = [`.${basename(path)}.tmp-`, ...(andOld ? [`.${basename(path)}.old-`] : [])];
  for (const name of await readdir(dirname(path)).catch(() => [] as string[])) {
    if (prefixes.some((p) => name.startsWith(p)) && stagingOwner(name) !== undefined && !stagingInUse(dirname(path), name)) {
      await rm(join(dirname(path), name), { recursive: true, force: true }).catch(() => {});
    }
  }
}

/** `.NAME.tmp-PID-RANDOM` / `.NAME.old-PID-RANDOM` beside `dir`: where atomic replacement stages. */
export function siblingPath(dir: string, tag: 'tmp' | 'old'): string {
  const path = join(dirname(dir), `.${basename(dir)}.${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
  if (tag === 'tmp') temporaries.add(path);
  ownStaging.add(resolve(path));
  return path;
}

/** A staging path of this process's is done with: renamed into place or removed. */
function stagingDone(path: string): void {
  temporaries.delete(path);
  ownStaging.delete(resolve(path));
}

/** Staging paths (`.NAME.tmp-*`, `.NAME.old-*`; absolute) this process made and is not done with. */
const ownStaging = new Set<string>();

/**
 * Whether the process that staged `name` in `parent` may still be using it: it is alive, and if
 * its pid is this process's own (a restarted container gives the same pids out again), this
 * process made it.
 */
function stagingInUse(parent: string, name: string): boolean {
  const pid = stagingOwner(name);
  if (pid === undefined || !processAlive(pid)) return false;
  return pid !== process.pid || ownStaging.has(resolve(parent, name));
}

/** The pid in a siblingPath name (`.NAME.tmp-PID-RANDOM`): the process that staged it. */
function stagingOwner(name: string): number | undefined {
  const pid = Number(/\.(?:tmp|old)-(\d+)-[0-9a-f]+$/.exec(name)?.[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** Unfinished writes of this process (`.NAME.tmp-*` files and folders), until they are renamed into place. */
const temporaries = new Set<string>();

/**
 * Deletes, synchronously, what this process was still writing: for a process about to exit on a
 * signal (Ctrl-C during an export), so no half-written temporary file is left behind.
 */
export function removeTemporariesNow(): void {
  for (const path of temporaries) {
    try {
      rmSync(path, { recursive: true, force: true });
    } catch {
      // left for the next write of the same name (see writeFileAtomic) or load (recoverInterruptedReplace)
    }
  }
  temporaries.clear();
}

/**
 * Whether process `pid` exists: this one included, and one of another user (kill answers EPERM),
 * which may still own what it left.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** This process's pid namespace ("pid:[4026531836]", Linux), which its pids are numbers in; undefined elsewhere. */
export function pidNamespace(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

/**
 * What tells process `pid` from a later one given the same pid (a container restarted, pids
 * wrapped): its boot and start time on Linux, from /proc; undefined elsewhere or when it is gone.
 */
export function processStartMark(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, starttime 22.
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return start ? `${boot}:${start}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where `dir` is when a replacement (commitDir) was killed between its two renames: with no `dir`,
 * the newest `.dir.old-*` sibling of a process that is gone, when `isWhole` says it is one; else
 * null. recoverInterruptedReplace renames it back; a reader in a read-only folder reads it there.
 */
export async function interruptedReplaceLeftover(dir: string, isWhole: (path: string) => Promise<boolean>): Promise<string | null> {
  if (await exists(dir)) return null;
  const parent = dirname(dir), base = basename(dir);
  const siblings = await readdir(parent).catch(() => [] as string[]);
  const old = siblings.filter((n) => n.startsWith(`.${base}.old-`) && !stagingInUse(parent, n));
  if (old.length === 0) return null;
  const stats = await Promise.all(old.map(async (n) => ({ n, t: (await stat(join(parent, n))).mtimeMs })));
  stats.sort((a, b) => b.t - a.t);
  return (await isWhole(join(parent, stats[0]!.n))) ? join(parent, stats[0]!.n) : null;
}

/**
 * A replacement (commitDir) killed between its two renames leaves no `dir` but a `.dir.old-*`
 * sibling holding the previous one: put it back when `isWhole` says it is one. Once `dir` is
 * there, leftover `.dir.tmp-*` / `.dir.old-*` siblings of processes that are gone are removed
 * (removeStaleTemporaries, as after every commitDir).
 */
export async function recoverInterruptedReplace(dir: string, isWhole: (path: string) => Promise<boolean>): Promise<void> {
  const left = await interruptedReplaceLeftover(dir, isWhole);
  if (left !== null) await rename(left, dir);
  if (await exists(dir)) await removeStaleTemporaries(dir, true);
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
  } finally {
    stagingDone(tmp);
  }
  await rm(old, { recursive: true, force: true });
  stagingDone(old);
  // What writes of `dir` killed earlier left (SIGKILL, a power cut) goes now that a whole one is in place.
  await removeStaleTemporaries(dir, true);
}

/**
 * `to` made to hold what `from` holds: files hard-linked (the same data, nothing copied, so it is
 * already on disk), folders recreated, anything else (a symlink; a file where links fail, as across
 * file systems) copied.
 */
async function linkTree(from: string, to: string): Promise<void> {
  const info = await lstat(from);
  if (info.isDirectory()) {
    await mkdir(to);
    for (const name of await readdir(from)) await linkTree(join(from, name), join(to, name));
    return;
  }
  if (info.isFile()) {
    try {
      await link(from, to);
      return;
    } catch { /* copied below */ }
  }
  await cp(from, to, { preserveTimestamps: true, verbatimSymlinks: true });
}

/**
 * Writes `files` (name -> bytes, each fsynced) into a fresh siblingPath of `dir`, then commits it
 * as `dir` (commitDir). With `keepOthers`, what an existing `dir` holds besides `files`' names and
 * `ownNames` (files of an earlier write that this one leaves out) is carried over first (linkTree):
 * someone's notes in the folder outlive the replacement, and a crash before the commit leaves the
 * originals where they were. On failure the temporary folder is removed and the error goes
 * through ioError(e, `write ${what}`).
 */
export async function writeDirFiles(
  dir: string, files: Map<string, Uint8Array | readonly Uint8Array[]>, what: string, keepOthers?: { ownNames: readonly string[] },
): Promise<void> {
  const tmp = siblingPath(dir, 'tmp');
  try {
    await makeDirs(tmp);
    if (keepOthers) {
      const own = new Set([...files.keys(), ...keepOthers.ownNames]);
      const existing = (await stat(dir).catch(() => null))?.isDirectory() ? await readdir(dir) : [];
      for (const name of existing) if (!own.has(name)) await linkTree(join(dir, name), join(tmp, name));
    }
    for (const [name, bytes] of files) await writeFileSynced(join(tmp, name), bytes);
    await commitDir(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw ioError(e, `write ${what}`);
  }
}

/**
 * The most bytes one file is read into: 4 GiB, one buffer's limit on Node 20 (later Nodes allow
 * more, but a checkpoint must load on every supported Node, and the cpu backend holds 4 GiB).
 */
export const MAX_FILE_READ_BYTES = 2 ** 32;

/**
 * A whole file's bytes, like readFile, also past readFile's 2 GiB (read in 1 GiB pieces), up to
 * MAX_FILE_READ_BYTES; a larger file is a MinigptError. Errors of open and read are readFile's.
 */
export async function readWholeFile(path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size < 2 ** 31 - 1) return await fh.readFile();
    if (size > MAX_FILE_READ_BYTES) {
      throw new MinigptError(`${path} is ${(size / 2 ** 30).toFixed(1)} GiB, more than the ${(MAX_FILE_READ_BYTES / 2 ** 30).toFixed(0)} GiB one file can be read into here`);
    }
    const out = new Uint8Array(size);
    let at = 0;
    while (at < size) {
      const { bytesRead } = await fh.read(out, at, Math.min(2 ** 30, size - at), at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return at === size ? out : out.subarray(0, at);
  } finally {
    await fh.close();
  }
}

/** Whether `path` is a folder with something in it. */
export async function isNonEmptyDir(path: string): Promise<boolean> {
  const info = await stat(path).catch(() => null);
  return info !== null && info.isDirectory() && (await readdir(path)).length > 0;
}

/** The first `n` bytes of a file (fewer if it is shorter). */
export async function readHead(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Whether the file is a plot minigpt drew (plot, lr-find, a run's loss.svg), by its opening tag; reads only its first bytes. */
export async function isMinigptPlot(path: string): Promise<boolean> {
  try {
    const head = new TextDecoder().decode(await readHead(path, 256)).replace(/^\uFEFF/, '').trimStart();
    // Marked since 2026-12-07; earlier plots are known by the renderer's exact opening tag.
    return /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" (data-minigpt="plot" )?width="\d+" height="\d+" viewBox="0 0 \d+ \d+" font-family="sans-serif" font-size="\d+">/.test(head);
  } catch {
    return false;
  }
}

/**
 * Before writing the output file `path` (given as `flag`, e.g. "--out"): refuses, with a
 * MinigptError, to replace an existing regular file unless `force` or `isOurs(path)` says it is
 * one of ours of the same kind (`what`, e.g. "minigpt plot"). An empty file is replaced; a
 * folder is refused; a missing file or a non-regular one (/dev/stdout) is fine.
 * Nothing a user made is replaced by accident.
 */
export async function checkOutputFile(
  path: string,
  opts: { flag?: string; what: string; force?: boolean; isOurs: (path: string) => Promise<boolean> },
): Promise<void> {
  // /dev/stdout is written through the process's stream (writeFileAtomic), whatever the shell sent it to.
  const info = standardStream(path) !== undefined ? null : await stat(path).catch(() => null);
  if (info === null) return;
  if (info.isDirectory()) throw new MinigptError(`${opts.flag ?? '--out'} ${path} is a folder; give a file name`);
  // A checkpoint's own file (its manifest.json checks it): replacing it would break the checkpoint, --force or not.
  const manifest = await readFile(join(dirname(resolve(path)), 'manifest.json'), 'utf8').then((t) => JSON.parse(t) as { sha256?: unknown }, () => null);
  if (manifest && typeof manifest.sha256 === 'object' && manifest.sha256 !== null && basename(path) in manifest.sha256) {
    throw new MinigptError(`${path} is part of the checkpoint in ${dirname(resolve(path))} (its manifest.json checks it); writing it would break that checkpoint: choose another ${opts.flag ?? '--out'}`);
  }
  if (!info.isFile() || info.size === 0 || opts.force) return;
  if (await opts.isOurs(path)) return;
  throw new MinigptError(`${path} exists and is not a ${opts.what}; pass --force to replace it, or choose another ${opts.flag ?? '--out'}`);
}
