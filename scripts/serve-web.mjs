#!/usr/bin/env node
/**
 * A tiny static server for the browser page (dist/web, built by `npm run build:web`).
 *
 *   node scripts/serve-web.mjs [--port 8080] [DIR]
 *
 * It listens on 127.0.0.1 only: a page on localhost is a secure context, which WebGPU requires.
 * Every response carries ISOLATION_HEADERS (COOP same-origin, COEP require-corp), which make the
 * page cross-origin isolated: only then does a browser give it SharedArrayBuffer and shared
 * WebAssembly memory, which the cpu backend's threads need. Any static host serving the page must
 * send the same two headers. test/browser.test.ts uses serveDir() on a random port.
 */
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** Cross-origin isolation: SharedArrayBuffer (the cpu backend's shared memory) needs both. */
export const ISOLATION_HEADERS = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
};

/** Serves `dir` on 127.0.0.1:`port` (0: a free port). Resolves with the server and its base URL. */
export async function serveDir(dir, port = 0) {
  const root = resolve(dir);
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (file !== root && !file.startsWith(root + sep)) {
      res.writeHead(403, ISOLATION_HEADERS).end('forbidden');
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store', ...ISOLATION_HEADERS }).end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain', ...ISOLATION_HEADERS }).end(`not found: ${path}`);
    }
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const p = args.indexOf('--port');
  const port = p >= 0 ? Number(args.splice(p, 2)[1]) : Number(process.env.PORT ?? 8080);
  const dir = args[0] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');
  const { url } = await serveDir(dir, port);
  console.log(`serving ${resolve(dir)} at ${url} (Ctrl-C to stop)`);
}
