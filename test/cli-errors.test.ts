/** Every command meets bad input with one clear line on stderr, exit 1, and no stack trace. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'minigpt-errors-'));
writeFileSync(join(root, 'empty.txt'), '');
writeFileSync(join(root, 'binary.bin'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 1, 2, 0, 255]));
writeFileSync(join(root, 'latin1.txt'), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a]));
writeFileSync(join(root, 'ok.txt'), 'hello there\n'.repeat(50));
writeFileSync(join(root, 'bad.jsonl'), '{"text": "fine"}\nnot json\n');
mkdirSync(join(root, 'nofiles'));
writeFileSync(join(root, 'nofiles', 'image.png'), 'x');
mkdirSync(join(root, 'notackpt'));
writeFileSync(join(root, 'notackpt', 'notes.txt'), 'mine');

const cases: [string[], RegExp][] = [
  [['sample', '--ckpt', join(root, 'notackpt')], /not a minigpt checkpoint/],
  [['sample', '--ckpt', join(root, 'nothing-here')], /does not exist/],
  [['sample', '--ckpt', join(root, 'notackpt'), '--temperature', 'hot'], /--temperature must be a number/],
  [['sample', '--top-p', '1.5'], /--top-p must be at most 1/],
  [['eval', '--ckpt', join(root, 'notackpt'), '--data', join(root, 'ok.txt')], /not a minigpt checkpoint/],
  [['eval', '--text', 'a', '--data', 'b'], /exactly one of --text/],
  [['train', '--data', join(root, 'latin1.txt')], /invalid UTF-8 at byte 3/],
  [['train', '--data', join(root, 'bad.jsonl')], /bad\.jsonl:2: line is not valid JSON/],
  [['train', '--data', join(root, 'nofiles')], /no text files/],
  [['train', '--data', join(root, 'ok.txt'), '--out', join(root, 'notackpt', '..', 'notackpt'), '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--steps', '1', '--backend', 'reference'], /notackpt exists and is not a minigpt run; choose another --out/],
  [['train', '--tokenizer', 'bpe', '--bpe-vocab', '100'], /--bpe-vocab must be at least 257/],
  [['train', '--n-heads', '3'], /--n-heads \(3\) must divide --d-model \(128\)/],
  [['prepare', '--data', join(root, 'binary.bin'), '--tokenizer', 'char', '--out', join(root, 'shards')], /binary/],
  [['prepare', '--data', join(root, 'ok.txt'), '--tokenizer', 'char', '--out', join(root, 'notackpt')], /refus/],
  [['prepare', '--data', join(root, 'ok.txt'), '--out', join(root, 'shards3')], /--tokenizer char\|gpt2\|bpe is required/],
  [['prepare', '--data', join(root, 'empty.txt'), '--tokenizer', 'char', '--out', join(root, 'shards2')], /empty/],
  [['tokenizer', 'train', '--data', join(root, 'empty.txt'), '--vocab', '300', '--out', join(root, 't.json')], /empty/],
  [['tokenizer', 'frobnicate'], /frobnicate/],
  [['tokenizer', 'encode', '--tokenizer', join(root, 'ok.txt'), '--text', 'x'], /ok\.txt/],
  [['export', '--ckpt', join(root, 'notackpt'), '--out', join(root, 'hf')], /not a minigpt checkpoint/],
  [['export', '--ckpt', join(root, 'notackpt'), '--format', 'onnx', '--out', join(root, 'hf')], /--format must be one of/],
  [['import', '--from', join(root, 'notackpt'), '--out', join(root, 'imp')], /config\.json|not/],
  [['plot'], /at least one run directory/],
  [['plot', join(root, 'notackpt')], /metrics\.jsonl/],
  [['bench', '--config', 'huge'], /--config must be one of/],
  [['lr-find', '--start', '1', '--end', '0.1', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--data', join(root, 'ok.txt'), '--backend', 'reference'], /start lr < end lr/],
];

for (const [args, re] of cases) {
  test(`minigpt ${args.map((a) => a.replace(root, '$TMP')).join(' ')}: one clear line, exit 1`, () => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });
    assert.equal(r.status, 1, `exit ${r.status}; stderr: ${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !/XDG_RUNTIME_DIR/.test(l));
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], /^minigpt: error: /);
    assert.match(lines[0], re);
  });
}
