/**
 * A small static server for the browser page (dist/web): `minigpt web` and
 * scripts/serve-web.mjs. By default it listens on 127.0.0.1: a page on localhost is a secure
 * context, which WebGPU and Web Crypto require. Every response carries ISOLATION_HEADERS (COOP
 * same-origin, COEP require-corp), which make the page cross-origin isolated: only then does a
 * browser give it SharedArrayBuffer and shared WebAssembly memory, which the cpu backend's threads
 * need. A static host that cannot send them (GitHub Pages...) gets the same isolation from the page's
 * service worker (web/isolation.ts registers coi-serviceworker.js); `{ isolation: false }` serves
 * without the headers, as such a host does, for the tests of that path.
 */
import type { Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import type { AddressInfo } from 'node:net';

const TYPES: Record<string, string> = {
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

export interface ServeOptions {
  /** Send ISOLATION_HEADERS with every response (default true); false serves like a static host that cannot. */
  isolation?: boolean;
}

/** Serves the files under `dir` on `host`:`port` (port 0: a free one). Resolves with the server and its base URL. */
export async function serveDir(dir: string, port = 0, host = '127.0.0.1', { isolation = true }: ServeOptions = {}): Promise<{ server: Server; url: string }> {
  const root = resolve(dir);
  const isolationHeaders = isolation ? ISOLATION_HEADERS : {};
  // node:http is loaded here, not at the top: every command imports this module, and on Node 22
  // importing node:http instantiates a WebAssembly HTTP parser, which under a virtual-memory limit
  // (ulimit -v) crashed every command, --version included.
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    void (async () => {
      let path: string;
      try {
        path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      } catch {
        res.writeHead(400, { 'content-type': 'text/plain', ...isolationHeaders }).end('bad request');
        return;
      }
      const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
      if (file !== root && !file.startsWith(root + sep)) {
        res.writeHead(403, { 'content-type': 'text/plain', ...isolationHeaders }).end('forbidden');
        return;
      }
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store', ...isolationHeaders }).end(body);
      } catch {
        res.writeHead(404, { 'content-type': 'text/plain', ...isolationHeaders }).end(`not found: ${path}`);
      }
    })();
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => ok());
  });
  const address = server.address() as AddressInfo;
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return { server, url: `http://${shown}:${address.port}/` };
}
