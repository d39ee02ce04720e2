#!/usr/bin/env node
/**
 * Memory bound of `prepareShards`: generates a corpus of about 1 GB in a temporary folder
 * (streamed to disk, never held in memory), prepares char-tokenizer shards from it, checks
 * the shards open, and prints the peak RSS (process.resourceUsage().maxRSS) and the time.
 * Everything it writes is deleted afterwards. Not a test: it takes a minute or more. Build first:
 *
 *   npx tsc -p . && node bench/prepare-memory.mjs [MEGABYTES=1024]
 *
 * The target: a 1 GB corpus in under 500 MB RSS.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { prepareShards, openShards } = await import(join(root, 'dist/src/data/shards.js'));

const megabytes = Number(process.argv[2] === '--child' ? 0 : process.argv[2] ?? 1024);
const LIMIT_MB = 500;
const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const peakRss = () => process.resourceUsage().maxRSS * 1024; // maxRSS is in kilobytes

/** A seeded generator (mulberry32). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes about `bytes` of varied text (prose lines, paragraphs, some CRLF and non-ASCII) to `path`. */
function writeCorpus(path, bytes) {
  const r = rng(1);
  const words = ('the of and to in is was that for on with as by at from his her they which this be have had not but ' +
    'are were one all their there been has more when will would who so no king queen über café naïve 中文 😀 — "quoted" it\'s 1984 3.14').split(' ');
  // 16 different 4 MB blocks, written in a shuffled cycle: varied text at disk speed, little memory.
  const encoder = new TextEncoder();
  const blocks = [];
  for (let b = 0; b < 16; b++) {
    const lines = [];
    let size = 0;
    while (size < 4 * 1024 * 1024) {
      const n = 3 + Math.floor(r() * 18);
      let line = '';
      for (let i = 0; i < n; i++) line += (i ? ' ' : '') + words[Math.floor(r() * words.length)];
      line += r() < 0.05 ? '\r\n' : r() < 0.1 ? '.\n\n' : '.\n';
      lines.push(line);
      size += line.length;
    }
    blocks.push(encoder.encode(lines.join('')));
  }
  const fd = openSync(path, 'w');
  let written = 0;
  try {
    while (written < bytes) {
      const block = blocks[Math.floor(r() * blocks.length)];
      writeSync(fd, block);
      written += block.length;
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

/** Runs in a child process, so its peak RSS is prepare's alone, not the generator's. */
async function prepareChild(corpus, out, size) {
  const t = performance.now();
  let lastPrint = 0;
  const summary = await prepareShards({
    data: corpus,
    out,
    tokenizer: 'char',
    onProgress: (p) => {
      const now = performance.now();
      if (now - lastPrint < 10_000) return;
      lastPrint = now;
      console.log(`  ${p.phase}: ${mb(p.bytesRead)} / ${mb(p.bytesTotal)}, ${p.tokens.toLocaleString('en-US')} tokens, RSS ${mb(process.memoryUsage.rss())}`);
    },
  });
  const seconds = (performance.now() - t) / 1000;
  const opened = await openShards(summary.out);
  const window = new Int32Array(1025);
  opened.train.read(opened.train.length - window.length, window);
  opened.close();
  const outBytes = (await Promise.all([...summary.train.shards, ...summary.val.shards].map((n) => stat(join(summary.out, n))))).reduce((s, x) => s + x.size, 0);
  const peak = peakRss();
  console.log(
    `prepared ${mb(size)} (char tokenizer, vocabulary ${summary.vocabSize}): ${summary.train.tokens.toLocaleString('en-US')} train + ` +
      `${summary.val.tokens.toLocaleString('en-US')} val tokens in ${summary.train.shards.length + summary.val.shards.length} shards (${mb(outBytes)}) ` +
      `in ${seconds.toFixed(1)}s (${(size / 1024 / 1024 / seconds).toFixed(1)} MB/s over both passes)`,
  );
  console.log(`peak RSS of the prepare process ${mb(peak)} (limit ${LIMIT_MB} MB): ${peak < LIMIT_MB * 1024 * 1024 ? 'OK' : 'OVER'}; node ${process.version}`);
  return peak < LIMIT_MB * 1024 * 1024;
}

if (process.argv[2] === '--child') {
  const [, , , corpus, out, size] = process.argv;
  process.exitCode = (await prepareChild(corpus, out, Number(size))) ? 0 : 1;
} else {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-prepare-memory-'));
  try {
    const corpus = join(dir, 'corpus.txt');
    const t = performance.now();
    const size = writeCorpus(corpus, megabytes * 1024 * 1024);
    console.log(`generated ${mb(size)} corpus in ${((performance.now() - t) / 1000).toFixed(1)}s`);
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', corpus, join(dir, 'shards'), String(size)], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
