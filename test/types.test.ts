/** The published type declarations compile in a consumer's strict project, without skipLibCheck. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('a strict TypeScript consumer of the package type-checks against dist/*.d.ts (no WebGPU types needed)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-types-'));
  await mkdir(join(dir, 'node_modules'));
  await symlink(ROOT, join(dir, 'node_modules', 'minigpt'), 'dir');
  await writeFile(join(dir, 'package.json'), '{"type":"module"}');
  await writeFile(join(dir, 'use.ts'), [
    "import { train, loadModel, generate, scoreText, findLearningRate, loadTrainingData, resolveConfig, type TrainOptions } from 'minigpt';",
    "const o: TrainOptions = { steps: 10, model: { d_model: 64 }, onStep: (s) => console.log(s.loss, s.tokensPerSecond) };",
    'const summary = await train(o);',
    'const loaded = await loadModel(summary.checkpoint);',
    "for await (const t of generate(loaded, 'a', { maxTokens: 3 })) console.log(t.text);",
    "const { loss } = await scoreText(loaded, 'ab');",
    "const data = await loadTrainingData({ data: 'x.txt' });",
    'const r = await findLearningRate({ config: resolveConfig({ vocab_size: data.tokenizer.vocabSize }), train: data.train });',
    'console.log(loss, r.suggestion);',
    '',
  ].join('\n'));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  // Only @types/node from outside: the declarations must not need @webgpu/types or DOM types.
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
    '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), 'use.ts'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
