/**
 * `minigpt web` serves the browser page with the cross-origin isolation headers the cpu backend
 * needs, only from its folder, stops cleanly on Ctrl-C (exit 0), and says in one line what is
 * wrong with a port in use or a folder without a page.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'minigpt-web-'));
const page = join(root, 'page');
spawnSync('mkdir', ['-p', page]);
writeFileSync(join(page, 'index.html'), '<!doctype html><title>page</title>');
writeFileSync(join(page, 'kernels.wasm'), new Uint8Array([0, 0x61, 0x73, 0x6d]));
writeFileSync(join(root, 'secret.txt'), 'not to be served');

/** GET `path` exactly as given (no URL normalisation), for status, headers and body. */
function get(base: string, path: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const u = new URL(base);
  return new Promise((ok, fail) => {
    request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }));
    }).on('error', fail).end();
  });
}

test('serves the page with COOP/COEP and content types, nothing outside its folder, and exits 0 on Ctrl-C', async () => {
  const child = spawn(process.execPath, [CLI, 'web', '--port', '0', '--dir', page], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stderr.on('data', (c: Buffer) => (err += c));
  const url = await new Promise<string>((ok, fail) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c;
      const m = /minigpt page at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) ok(m[1]!);
    });
    child.on('exit', (code) => fail(new Error(`exited ${code}: ${err}`)));
  });
  const index = await get(url, '/');
  assert.equal(index.status, 200);
  assert.match(index.body, /<title>page<\/title>/);
  assert.equal(index.headers['cross-origin-opener-policy'], 'same-origin');
  assert.equal(index.headers['cross-origin-embedder-policy'], 'require-corp');
  assert.match(String(index.headers['content-type']), /^text\/html/);
  assert.equal((await get(url, '/kernels.wasm')).headers['content-type'], 'application/wasm');
  const missing = await get(url, '/nothing.js');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers['cross-origin-embedder-policy'], 'require-corp');
  for (const path of ['/../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt']) {
    const r = await get(url, path);
    assert.ok(r.status === 403 || r.status === 404, `${path}: ${r.status}`);
    assert.ok(!r.body.includes('not to be served'), path);
  }
  assert.equal((await get(url, '/%E0%A4%A')).status, 400);
  const exit = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
  child.kill('SIGINT');
  assert.equal(await exit, 0, err);
  assert.equal(err, '');
});

test('a port in use, a folder without a page and a bad flag are one-line errors', async () => {
  const busy = createServer();
  await new Promise<void>((ok) => busy.listen(0, '127.0.0.1', () => ok()));
  const port = (busy.address() as AddressInfo).port;
  try {
    const cases: [string[], RegExp][] = [
      [['web', '--port', String(port), '--dir', page], new RegExp(`port ${port} is in use; pass --port N \\(0 picks a free one\\)`)],
      [['web', '--dir', root], /holds no built page \(no index\.html\); build one with npm run build:web/],
      [['web', '--port', '70000'], /--port must be at most 65535/],
    ];
    for (const [args, re] of cases) {
      const r = await new Promise<{ status: number | null; stderr: string }>((ok) => {
        const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        c.stderr.on('data', (d: Buffer) => (stderr += d));
        c.on('exit', (status) => ok({ status, stderr }));
      });
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.split('\n').filter((l) => l.trim());
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^minigpt: error: /);
      assert.match(lines[0]!, re);
    }
  } finally {
    busy.close();
  }
});

test('listening beyond this machine notes that plain http gives other machines no WebGPU or shared memory', async () => {
  const child = spawn(process.execPath, [CLI, 'web', '--port', '0', '--host', '0.0.0.0', '--dir', page], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  await new Promise<void>((ok) => child.stderr.on('data', (c: Buffer) => {
    err += c;
    if (err.includes('\n')) ok();
  }));
  const exit = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
  child.kill('SIGINT');
  assert.equal(await exit, 0);
  assert.match(err, /^minigpt: note: from other machines this is plain http, not a secure context/);
});
