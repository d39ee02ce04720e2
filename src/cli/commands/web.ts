import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MinigptError, check } from '../../errors.js';
import type { CommandSpec } from '../args.js';
import { serveDir } from '../web-server.js';

/** Where `npm install` (prepare) and `npm run build:web` put the page: dist/web beside dist/src. */
export const BUILT_PAGE_DIR = fileURLToPath(new URL('../../../web/', import.meta.url));

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

export const webCommand: CommandSpec = {
  name: 'web',
  summary: 'serve the browser page: train a model in a browser tab, sample from it, download it',
  usage: 'minigpt web [--port 8080] [--host 127.0.0.1] [--dir DIR]',
  flags: {
    port: { type: 'int', min: 0, max: 65535, value: 'N', description: 'port to listen on (0: any free one)', default: 8080 },
    host: { type: 'string', value: 'ADDR', description: 'address to listen on (other machines reach it over plain http, which is not a secure context: see below)', default: '127.0.0.1' },
    dir: { type: 'string', value: 'DIR', description: 'a built page to serve (default: the one npm install built, dist/web)' },
  },
  details: [
    'Open the printed address in Chrome, Edge or Firefox. The page trains in the tab (WebGPU on a',
    'hardware GPU, else the cpu backend: WebAssembly SIMD on every core), plots train and',
    'validation loss, generates from a prompt, and downloads the model as a checkpoint .zip',
    '(`minigpt sample --ckpt minigpt-model.zip`), a llama.cpp .gguf or a transformers folder.',
    '',
    'Every response is sent with Cross-Origin-Opener-Policy: same-origin and',
    'Cross-Origin-Embedder-Policy: require-corp: the cpu backend\'s shared memory needs both. On a',
    'static host that cannot send them (GitHub Pages...), dist/web gets them from its service worker',
    '(one automatic reload). A page reached over plain http from another machine is not a secure',
    'context: browsers give it neither WebGPU nor shared memory nor service workers, so it trains on',
    'the slow reference backend; serve it over https for other machines.',
    '',
    'Examples:',
    '  minigpt web                 # then open http://127.0.0.1:8080/',
    '  minigpt web --port 0        # any free port',
  ].join('\n'),
  async run(v) {
    const dir = resolve(typeof v.dir === 'string' ? v.dir : BUILT_PAGE_DIR);
    check(
      existsSync(join(dir, 'index.html')),
      typeof v.dir === 'string' ? `${dir} holds no built page (no index.html); build one with npm run build:web` : `the page is not built (${dir} has no index.html); build it with npm run build:web`,
    );
    const host = v.host as string;
    let served;
    try {
      served = await serveDir(dir, v.port as number, host);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') throw new MinigptError(`port ${v.port} is in use; pass --port N (0 picks a free one)`);
      if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new MinigptError(`--host ${host} is not an address of this machine`);
      if (code === 'EACCES') throw new MinigptError(`no permission to listen on port ${v.port}; pass --port above 1023`);
      throw e;
    }
    // Ctrl-C is how a server is stopped: close it and exit 0 (listening before the address is printed, so a quick Ctrl-C is caught too).
    const stopped = new Promise<void>((done) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        served.server.close(() => done());
        served.server.closeAllConnections();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    console.log(`minigpt page at ${served.url} (serving ${dir}; Ctrl-C to stop)`);
    if (!LOOPBACK.has(host)) {
      console.error('minigpt: note: from other machines this is plain http, not a secure context: their browsers give the page no WebGPU and no shared memory, so it trains on the slow reference backend (serve dist/web over https for them)');
    }
    await stopped;
  },
};
