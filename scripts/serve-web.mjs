#!/usr/bin/env node
/**
 * Serves the browser page (dist/web) like `minigpt web`, from a script: the tests import
 * serveDir and ISOLATION_HEADERS from here. The server is src/cli/web-server.ts (built by tsc).
 *
 *   node scripts/serve-web.mjs [--port 8080] [DIR]
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ISOLATION_HEADERS, serveDir } from '../dist/src/cli/web-server.js';

export { ISOLATION_HEADERS, serveDir };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const p = args.indexOf('--port');
  const port = p >= 0 ? Number(args.splice(p, 2)[1]) : Number(process.env.PORT ?? 8080);
  const dir = args[0] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'web');
  const { url } = await serveDir(dir, port);
  console.log(`serving ${resolve(dir)} at ${url} (Ctrl-C to stop)`);
}
