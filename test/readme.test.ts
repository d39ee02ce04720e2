/** The README's TypeScript examples run as written (against a small corpus in a temp directory). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const INDEX = pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href;
const blocks = [...readFileSync(join(ROOT, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

test('README has library examples for train, load/logits/sample and lr-find', () => {
  assert.equal(blocks.length, 3);
  assert.match(blocks[0], /train\(/);
  assert.match(blocks[1], /generate\(/);
  assert.match(blocks[2], /findLearningRate\(/);
});

test('README examples run in order and print what they promise', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-readme-'));
  await writeFile(join(dir, 'shakespeare.txt'), Array.from({ length: 400 }, (_, i) => `ROMEO: To be, or not to be, line ${i % 10}.`).join('\n'));
  for (const [i, code] of blocks.entries()) {
    // Type annotations are not used in the examples, so they run as plain ESM after the import rewrite;
    // the model is tiny already, so only the step counts are cut to keep the test fast.
    const js = code.replaceAll("from 'minigpt'", `from '${INDEX}'`).replace('steps: 200', 'steps: 20').replace('steps: 100 }', 'steps: 20, backend: "reference" }');
    const file = join(dir, `example-${i}.mjs`);
    await writeFile(file, js.replace('train({', 'train({ backend: "reference",').replace("loadModel('runs/tiny/checkpoint')", "loadModel('runs/tiny/checkpoint', { backend: 'reference' })"));
    const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `example ${i} failed:\n${r.stderr}`);
    assert.ok(r.stdout.trim().length > 0, `example ${i} printed nothing`);
  }
});
