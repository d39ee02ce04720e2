/**
 * Every command meets bad input with one clear line on stderr, exit 1, and no stack trace: bad
 * flags and files, non-UTF-8 and huge-line text, mismatched tokenizers, read-only and full disks.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, renameSync, openSync, closeSync, mkdtempSync, writeFileSync, mkdirSync, readFileSync, readdirSync, rmSync, cpSync, statSync, chmodSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRng } from '../src/util/random.js';
import { loadCheckpoint } from '../src/io/checkpoint.js';

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
  [['eval', '--text', 'a', '--data', 'b'], /give one of --text "..." or --data PATH, not both/],
  [['train', '--data', join(root, 'latin1.txt')], /invalid UTF-8 at byte 3/],
  [['train', '--data', join(root, 'bad.jsonl')], /bad\.jsonl:2: line is not valid JSON/],
  [['train', '--data', join(root, 'nofiles')], /no text files/],
  [['train', '--data', join(root, 'ok.txt'), '--out', join(root, 'notackpt', '..', 'notackpt'), '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--steps', '1', '--backend', 'reference'], /notackpt exists and is not a minigpt run; choose another --out/],
  [['train', '--tokenizer', 'bpe', '--bpe-vocab', '100'], /--bpe-vocab must be at least 257/],
  [['train', '--n-heads', '3'], /--n-heads \(3\) must divide --d-model \(128\)/],
  [['train', '--min-lr', '0.5', '--lr', '0.1'], /--min-lr 0\.5 must be at most --lr \(0\.1\)/],
  [['init', '--out', join(root, 'huge1'), '--chars', 'abc', '--d-model', '100000000'], /--d-model must be at most 16777216 \(got 100000000\)/],
  [['init', '--out', join(root, 'huge2'), '--chars', 'abc', '--d-model', '65536', '--n-layers', '100'], /about 5\.15e\+12 parameters, more than the 2147483648 this toolkit can hold; use a smaller --d-model, --n-layers or --vocab-size$/],
  [['prepare', '--data', join(root, 'binary.bin'), '--tokenizer', 'char', '--out', join(root, 'shards')], /binary/],
  [['prepare', '--data', join(root, 'ok.txt'), '--tokenizer', 'char', '--out', join(root, 'notackpt')], /refus/],
  [['prepare', '--data', join(root, 'ok.txt'), '--out', join(root, 'shards3')], /--tokenizer char\|gpt2\|bpe is required/],
  [['prepare', '--data', join(root, 'ok.txt'), '--tokenizer', 'chr', '--out', join(root, 'shards4')], /--tokenizer chr: no such file or folder/],
  [['prepare', '--data', join(root, 'empty.txt'), '--tokenizer', 'char', '--out', join(root, 'shards2')], /empty/],
  [['tokenizer', 'train', '--data', join(root, 'empty.txt'), '--vocab', '300', '--out', join(root, 't.json')], /empty/],
  [['tokenizer', 'frobnicate'], /frobnicate/],
  [['tokenizer', 'encode', '--tokenizer', join(root, 'ok.txt'), '--text', 'x'], /ok\.txt/],
  [['export', '--ckpt', join(root, 'notackpt'), '--out', join(root, 'hf')], /not a minigpt checkpoint/],
  [['export', '--ckpt', join(root, 'notackpt'), '--format', 'onnx', '--out', join(root, 'hf')], /--format must be one of/],
  [['import', '--from', join(root, 'notackpt'), '--out', join(root, 'imp')], /config\.json|not/],
  [['plot'], /at least one run directory/],
  [['init', '--out', join(root, 'too-big'), '--chars', 'abc', '--d-model', '2048', '--n-layers', '24', '--n-heads', '16'], /1,209,\d{3},\d{3} parameters has weights of 4\.5 GiB, past the 4\.0 GiB one checkpoint file can be read back from: it could be saved but never loaded/],
  [['train', '--data', join(root, 'ok.txt'), '--d-model', '2048', '--n-layers', '12', '--n-heads', '16', '--context', '8', '--out', join(root, 'too-big')], /AdamW moments of 4\.5 GiB, .*never resumed; use a smaller model \(at most ~536M parameters to train\)/],
  [['plot', join(root, 'notackpt')], /metrics\.jsonl/],
  [['bench', '--config', 'huge'], /--config must be one of/],
  [['bench', '--backend', 'reference', '--attention', 'split'], /--attention split measures the webgpu backend's attention kernels, not the reference backend's/],
  [['lr-find', '--start', '1', '--end', '0.1', '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--data', join(root, 'ok.txt'), '--backend', 'reference'], /start lr < end lr/],
];

const mounts: string[] = [];
after(() => {
  for (const m of mounts) spawnSync('umount', ['-l', m]);
});

const run = (args: string[], opts: { timeout?: number } = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root, timeout: opts.timeout ?? 60_000, maxBuffer: 64 << 20 });

/**
 * Exit 1, and exactly one line on stderr: `minigpt: error: ...` matching `re` (so no stack trace).
 * With `progress`, lines a run printed before it failed (its start summary) may come first.
 */
function assertOneLine(r: ReturnType<typeof run>, re: RegExp, progress = false): void {
  assert.equal(r.status, 1, `exit ${r.status}; stderr: ${r.stderr}`);
  let lines = r.stderr.split('\n').filter((l) => l.trim() && !/XDG_RUNTIME_DIR/.test(l));
  if (progress) {
    assert.ok(lines.every((l) => !/^\s+at /.test(l)), `no stack trace: ${r.stderr}`);
    lines = lines.slice(-1);
  }
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0]!, /^minigpt: error: /);
  assert.match(lines[0]!, re);
}

function matrix(list: [string[], RegExp][]): void {
  for (const [args, re] of list) {
    test(`minigpt ${args.map((a) => a.replaceAll(root, '$TMP')).join(' ')}: one clear line, exit 1`, () => assertOneLine(run(args), re));
  }
}
matrix(cases);

// ---------------------------------------------------------------------------------------------
// Fixtures: a tiny checkpoint whose char tokenizer knows a-z, space and newline, then
// <|endoftext|> (28 characters, 29 tokens).

const TINY = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--batch', '2', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0', '--quiet'];
const ABC = 'abcdefghijklmnopqrstuvwxyz the cat sat\n';
writeFileSync(join(root, 'abc.txt'), ABC.repeat(50));
const ck = join(root, 'ck');
const made = run(['train', '--data', join(root, 'abc.txt'), '--out', ck, '--steps', '2', ...TINY]);
if (made.status !== 0) throw new Error(`cannot train the fixture checkpoint: ${made.stderr}`);

// ---------------------------------------------------------------------------------------------
// Non-UTF-8 text in every command that reads text: UTF-16 (either byte order) and Latin-1.

writeFileSync(join(root, 'utf16le.txt'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('hello world\n'.repeat(20), 'utf16le')]));
writeFileSync(join(root, 'utf16be.txt'), Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from('hello world\n'.repeat(20), 'utf16le').swap16()]));
writeFileSync(join(root, 'latin1-long.txt'), Buffer.from('caf\xe9 na\xefve \xe0 la cr\xe8me br\xfbl\xe9e\n'.repeat(40), 'latin1'));

/** Each command that reads a text file: its arguments up to the file, and whether it takes --invalid-utf8. */
const TEXT_READERS: [string[], boolean][] = [
  [['train', ...TINY, '--steps', '1', '--out', join(root, 'never-run'), '--data'], true],
  [['prepare', '--tokenizer', 'char', '--out', join(root, 'never-shards'), '--data'], true],
  [['eval', '--ckpt', ck, '--backend', 'reference', '--data'], true],
  [['tokenizer', 'train', '--vocab', '260', '--out', join(root, 'never.json'), '--data'], true],
  [['tokenizer', 'encode', '--tokenizer', ck, '--file'], true],
];
matrix(TEXT_READERS.flatMap(([args, replace]): [string[], RegExp][] => [
  [[...args, join(root, 'latin1.txt')], replace ? /latin1\.txt: invalid UTF-8 at byte 3 .*--invalid-utf8 replace/ : /latin1\.txt: invalid UTF-8 at byte 3; re-encode the file as UTF-8/],
  [[...args, join(root, 'utf16le.txt')], /utf16le\.txt: file is UTF-16 encoded; re-encode it as UTF-8/],
  [[...args, join(root, 'utf16be.txt')], /utf16be\.txt: file is UTF-16 encoded; re-encode it as UTF-8/],
]));

test('every command whose error suggests --invalid-utf8 replace takes the flag, and warns about what it replaced', () => {
  for (const [args, replace] of TEXT_READERS) {
    if (!replace) continue;
    const r = run([...args, join(root, 'latin1-long.txt'), '--invalid-utf8', 'replace']);
    assert.doesNotMatch(r.stderr, /unknown flag|is for `minigpt/, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /^minigpt: warning: .*latin1-long\.txt: replaced 240 invalid UTF-8 sequences with U\+FFFD/m, `${args[0]} ${args[1]}: ${r.stderr}`);
    // The char checkpoint has no token for U+FFFD: that is the one error left, and it is clear.
    if (r.status !== 0) assertOneLine({ ...r, stderr: r.stderr.split('\n').filter((l) => !/replaced 240/.test(l)).join('\n') }, /"\uFFFD" \(U\+FFFD\)/);
  }
});

// ---------------------------------------------------------------------------------------------
// Huge lines are valid text: every command handles them correctly in bounded time.

const rng = createRng(3);
const WORDS = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog'];
const hugeLine = Array.from({ length: 400_000 }, () => WORDS[rng.int(WORDS.length)]).join(' '); // ~1.5 MB, no newline
const noSpace = Array.from({ length: 1_000_000 }, () => String.fromCharCode(97 + rng.int(26))).join(''); // 1 MB, one pre-token
writeFileSync(join(root, 'huge-line.txt'), hugeLine);
writeFileSync(join(root, 'no-space.txt'), noSpace);

test('train on a multi-megabyte line with no newline: every character becomes a token', () => {
  // Without --quiet: the header line counts the tokens.
  const r = run(['train', '--data', join(root, 'huge-line.txt'), '--out', join(root, 'huge-run'), '--steps', '1', ...TINY.filter((f) => f !== '--quiet')]);
  assert.equal(r.status, 0, r.stderr);
  const m = /char tokenizer \((\d+) tokens\): ([\d,]+) train \/ ([\d,]+) val tokens/.exec(r.stderr + r.stdout);
  assert.ok(m, r.stderr + r.stdout);
  assert.equal(Number(m[1]), new Set(hugeLine).size + 1); // and <|endoftext|>
  assert.equal(Number(m[2]!.replaceAll(',', '')) + Number(m[3]!.replaceAll(',', '')), hugeLine.length);
});

test('prepare a 1 MB text with no whitespace at all: char shards hold every character, bpe shards compress it', () => {
  const meta = (dir: string) => JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8'));
  let r = run(['prepare', '--data', join(root, 'no-space.txt'), '--tokenizer', 'char', '--out', join(root, 'ns-char')]);
  assert.equal(r.status, 0, r.stderr);
  let m = meta(join(root, 'ns-char'));
  assert.equal(m.train.tokens + m.val.tokens, noSpace.length);
  r = run(['prepare', '--data', join(root, 'no-space.txt'), '--tokenizer', 'bpe', '--bpe-vocab', '400', '--out', join(root, 'ns-bpe')], { timeout: 40_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}: ${r.stderr}`);
  m = meta(join(root, 'ns-bpe'));
  assert.equal(m.vocab_size, 400);
  assert.ok(m.train.tokens + m.val.tokens < 0.85 * noSpace.length, `${m.train.tokens + m.val.tokens} tokens`);
});

test('tokenizer train on a 1 MB word learns its merges in bounded time (each merge does not rewrite the whole word)', () => {
  const out = join(root, 'ns-tok.json');
  const r = run(['tokenizer', 'train', '--data', join(root, 'no-space.txt'), '--vocab', '600', '--out', out], { timeout: 40_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}: ${r.stderr}`);
  assert.equal(JSON.parse(readFileSync(out, 'utf8')).merges.length, 600 - 257);
});

test('eval and tokenizer encode read a multi-megabyte line whole', () => {
  let r = run(['eval', '--ckpt', ck, '--backend', 'reference', '--data', join(root, 'huge-line.txt'), '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout).tokens > 0);
  r = run(['tokenizer', 'encode', '--tokenizer', ck, '--file', join(root, 'huge-line.txt')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).length, hugeLine.length);
});

// ---------------------------------------------------------------------------------------------
// Tokenizer and model vocabularies that do not match.

/** A copy of the fixture checkpoint, changed by `edit(checkpointDir)`. */
function editedCheckpoint(name: string, edit: (dir: string) => void): string {
  const dir = join(root, name);
  cpSync(ck, dir, { recursive: true });
  edit(join(dir, 'checkpoint'));
  return dir;
}
const editJson = (path: string, edit: (j: Record<string, unknown>) => void): void => {
  const j = JSON.parse(readFileSync(path, 'utf8'));
  edit(j);
  writeFileSync(path, JSON.stringify(j));
};
// Three more characters; <|endoftext|> moves up to stay the last id, so the JSON is valid.
const biggerTokenizer = (dir: string) => editJson(join(dir, 'tokenizer.minigpt.json'), (j) => {
  (j.vocab as string[]).push('Æ', 'Ø', 'Å');
  j.special = { '<|endoftext|>': (j.vocab as string[]).length };
});
const tokNoManifest = editedCheckpoint('ck-tok', (d) => (biggerTokenizer(d), rmSync(join(d, 'manifest.json'))));
const tokManifest = editedCheckpoint('ck-tok-manifest', biggerTokenizer);
const vocabEdited = editedCheckpoint('ck-vocab', (d) => {
  editJson(join(d, 'config.json'), (j) => (j.vocab_size = (j.vocab_size as number) + 8));
  rmSync(join(d, 'manifest.json'));
});
const resumable = editedCheckpoint('ck-resume', () => {});

// Shards from another char vocabulary, and shards of the checkpoint's own tokenizer with a damaged
// token where opening does not look (token 5000) and where it does (token 10).
const shardsOther = join(root, 'sh-other');
const shardsOwn = join(root, 'sh-own');
writeFileSync(join(root, 'abc20k.txt'), ABC.repeat(500));
for (const [args, what] of [[['--data', join(root, 'ok.txt'), '--tokenizer', 'char', '--out', shardsOther], 'other'], [['--data', join(root, 'abc20k.txt'), '--tokenizer', ck, '--out', shardsOwn], 'own']] as const) {
  const r = run(['prepare', ...args]);
  if (r.status !== 0) throw new Error(`cannot prepare the ${what} shards: ${r.stderr}`);
}
const damagedShards = (name: string, token: number): string => {
  const dir = join(root, name);
  cpSync(shardsOwn, dir, { recursive: true });
  const file = join(dir, 'train_000000.bin');
  const bytes = readFileSync(file);
  bytes.writeUInt16LE(60000, 1024 + 2 * token);
  writeFileSync(file, bytes);
  return dir;
};
const damagedMiddle = damagedShards('sh-bad-5000', 5000);
const damagedStart = damagedShards('sh-bad-10', 10);

matrix([
  [['sample', '--ckpt', ck, '--prompt', 'Æble', '--backend', 'reference'], /--prompt: character "Æ" \(U\+00C6\) at line 1, column 1 .*leave it out of the prompt/],
  [['eval', '--ckpt', ck, '--text', 'smørrebrød', '--backend', 'reference'], /--text: character "ø" \(U\+00F8\) at line 1, column 3 .*leave it out/],
  [['sample', '--ckpt', tokNoManifest, '--backend', 'reference'], /tokenizer\.minigpt\.json has 32 tokens but the model's vocab_size is 29; .*put back the tokenizer\.minigpt\.json saved with this model/],
  [['sample', '--ckpt', tokManifest, '--backend', 'reference'], /tokenizer\.minigpt\.json does not match its checksum in manifest\.json/],
  [['eval', '--ckpt', vocabEdited, '--text', 'abc', '--backend', 'reference'], /has shape \[29,16\], config\.json says \[37,16\]; config\.json and the weights are from different models/],
  [['train', '--resume', resumable, '--tokenizer', 'bpe'], /--tokenizer bpe conflicts with the run being resumed: a resumed run keeps its char tokenizer of 29 tokens/],
  [['train', '--resume', resumable, '--lr', '0.5'], /--lr 0\.5 \(the run has 0\.003\): a resumed run keeps its model and training settings so that it continues exactly; drop the flag/],
  [['train', '--resume', resumable, '--d-model', '64', '--n-layers', '3'], /--d-model 64 \(the run has 16\), --n-layers 3 \(the run has 1\): .*drop those flags, or start a new run/],
  [['train', '--resume', resumable, '--steps', '1000', '--data', shardsOther], /sh-other was prepared with a char tokenizer of \d+ tokens, not the checkpoint's char tokenizer of 29 tokens; prepare the data again/],
  [['eval', '--ckpt', ck, '--data', shardsOther, '--backend', 'reference'], /sh-other was prepared with a char tokenizer of \d+ tokens, not the checkpoint's/],
  [['eval', '--ckpt', ck, '--data', damagedMiddle, '--all', '--backend', 'reference'], /train_000000\.bin: token 5000 is 60000, outside the vocabulary of 29/],
  [['train', '--data', damagedStart, '--out', join(root, 'never-run2'), '--steps', '1', ...TINY], /train_000000\.bin: token 10 is 60000, outside the vocabulary of 29/],
]);

test('train --resume accepts settings equal to the run\'s own (the flags it was made with)', () => {
  const dir = editedCheckpoint('ck-resume-same', () => {});
  const r = run(['train', '--resume', dir, '--steps', '3', ...TINY]);
  assert.equal(r.status, 0, r.stderr);
});

test('eval on shards prepared with the checkpoint\'s own tokenizer gives the same loss as on the text', () => {
  const onShards = run(['eval', '--ckpt', ck, '--data', shardsOwn, '--all', '--json', '--backend', 'reference']);
  const onText = run(['eval', '--ckpt', ck, '--data', join(root, 'abc20k.txt'), '--all', '--json', '--backend', 'reference']);
  assert.equal(onShards.status, 0, onShards.stderr);
  assert.equal(onText.status, 0, onText.stderr);
  const a = JSON.parse(onShards.stdout), b = JSON.parse(onText.stdout);
  assert.ok(Math.abs(a.val_loss - b.val_loss) < 0.01, `${a.val_loss} vs ${b.val_loss}`);
  // A char model on ASCII text: a byte per token, so bits per byte is the loss in bits.
  for (const r of [a, b]) assert.ok(Math.abs(r.bits_per_byte - r.val_loss / Math.LN2) < 1e-9, JSON.stringify(r));
});

// ---------------------------------------------------------------------------------------------
// Read-only and full output locations. A tmpfs mounted for the test works for root too (where
// mounting is permitted); otherwise a chmod-ed folder (not root) or /sys (root), checked first.

/** Mounts a tmpfs with `options` at a new folder; null where mounting is not permitted. */
function mountTmpfs(options: string): string | null {
  const dir = mkdtempSync(join(root, 'mnt-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  mounts.push(dir);
  return dir;
}

function readOnlyDir(): { dir: string | null; ours: boolean } {
  const mounted = mountTmpfs('ro,size=1m');
  if (mounted) return { dir: mounted, ours: true };
  if (process.getuid?.() !== 0) {
    const dir = mkdtempSync(join(root, 'ro-'));
    chmodSync(dir, 0o555);
    return { dir, ours: true };
  }
  try {
    mkdirSync('/sys/minigpt-probe');
    rmSync('/sys/minigpt-probe', { recursive: true });
  } catch (e) {
    if (['EROFS', 'EACCES', 'EPERM'].includes((e as NodeJS.ErrnoException).code!)) return { dir: '/sys', ours: false };
  }
  return { dir: null, ours: false };
}

const ro = readOnlyDir();
const writers = (dir: string): string[][] => [
  ['train', '--data', join(root, 'abc.txt'), '--out', join(dir, 'run'), '--steps', '1', ...TINY],
  ['prepare', '--data', join(root, 'abc20k.txt'), '--tokenizer', 'char', '--out', join(dir, 'shards')],
  ['export', '--ckpt', ck, '--out', join(dir, 'hf')],
  ['export', '--ckpt', ck, '--format', 'gguf', '--out', join(dir, 'model.gguf')],
  ['tokenizer', 'train', '--data', join(root, 'abc.txt'), '--vocab', '260', '--out', join(dir, 'tok.json')],
  ['plot', ck, '--out', join(dir, 'loss.svg')],
  ['lr-find', '--data', join(root, 'abc.txt'), '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--batch', '2', '--steps', '10', '--backend', 'reference', '--out', join(dir, 'lr.svg')],
];

test('every command that writes meets a read-only location with one clear line, and leaves nothing behind', { skip: ro.dir === null ? 'no read-only location here: cannot mount a tmpfs, and /sys is writable' : false }, () => {
  for (const args of writers(ro.dir!)) {
    const r = run(args);
    assertOneLine(r, /the file system is read-only|permission denied/, args[0] === 'lr-find');
    // lr-find's result is printed before its plot is written: a sweep's minutes are not lost with the plot.
    if (args[0] === 'lr-find') assert.match(r.stdout, /^suggested learning rate: /);
    if (ro.ours) assert.deepEqual(readdirSync(ro.dir!), [], args.join(' '));
  }
});

const full = mountTmpfs('size=16k');
test('every command that writes meets a full disk with one clear line, and leaves nothing behind', { skip: full === null ? 'cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)' : false }, () => {
  // Small outputs fit in 16 KB: only those that do not are checked.
  for (const args of writers(full!).slice(1, 4)) {
    assertOneLine(run(args), /the disk is full; free some space, or write somewhere else/);
    assert.deepEqual(readdirSync(full!), [], args.join(' '));
  }
  // Output redirected to a file on a full disk: an error, not a cut file and exit 0 (one write's short count was ignored).
  const fd = openSync(join(full!, 'ids.txt'), 'w');
  const r = spawnSync(process.execPath, [CLI, 'tokenizer', 'encode', '--tokenizer', 'gpt2', '--text', 'the cat '.repeat(8000)], { encoding: 'utf8', cwd: root, stdio: ['ignore', fd, 'pipe'] });
  closeSync(fd);
  assertOneLine(r, /^minigpt: error: cannot write output: the disk is full/);
  rmSync(join(full!, 'ids.txt'));
});

test('tokenizer train --out /dev/full: one clear line', { skip: statSync('/dev/full', { throwIfNoEntry: false }) ? false : 'no /dev/full' }, () => {
  assertOneLine(run(['tokenizer', 'train', '--data', join(root, 'abc.txt'), '--vocab', '260', '--out', '/dev/full']), /cannot write \/dev\/full: the disk is full/);
});

test('a checkpoint save that fails on a full disk keeps the previous checkpoint and says so', async (t) => {
  const flags = ['--data', join(root, 'abc.txt'), '--d-model', '32', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--batch', '2', '--backend', 'reference', '--eval-every', '0', '--sample-every', '0', '--quiet', '--save-every', '1'];
  // Room for one checkpoint and a half: the first save fits, the second (beside the first) does not.
  const probe = join(root, 'size-probe');
  assert.equal(run(['train', ...flags, '--out', probe, '--steps', '1']).status, 0);
  const size = readdirSync(join(probe, 'checkpoint')).reduce((s, f) => s + statSync(join(probe, 'checkpoint', f)).size, 0);
  const disk = mountTmpfs(`size=${Math.ceil((1.5 * size + 65536) / 4096) * 4096}`);
  if (disk === null) return t.skip('cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)');
  const runDir = join(disk, 'run');
  assertOneLine(run(['train', ...flags, '--out', runDir, '--steps', '5']), /cannot write checkpoint .*: the disk is full; .*the previous checkpoint in .* is intact \(resume from it with --resume /, true);
  const kept = await loadCheckpoint(join(runDir, 'checkpoint'), { training: true });
  assert.equal(kept.training!.step, 1);
  assert.deepEqual(readdirSync(runDir).sort(), ['checkpoint', 'metrics.jsonl']);
});

test('paths that cannot work and memory past the cpu backend\'s limit: one line each, not an internal error', () => {
  const dir = mkdtempSync(join(root, 'paths-'));
  symlinkSync('loop-b', join(dir, 'loop-a'));
  symlinkSync('loop-a', join(dir, 'loop-b'));
  const loop = join(dir, 'loop-a');
  for (const args of [
    ['train', '--data', loop, '--out', join(dir, 'run'), ...TINY],
    ['prepare', '--data', loop, '--tokenizer', 'char', '--out', join(dir, 'shards')],
    ['tokenizer', 'train', '--data', loop, '--vocab', '260', '--out', join(dir, 'tok.json')],
    ['tokenizer', 'encode', '--tokenizer', 'gpt2', '--file', loop],
  ]) {
    assertOneLine(run(args), /cannot stat .*loop-a: a symbolic link in the path leads back to itself; check the path/);
  }
  // A tokenizer or checkpoint path that loops is not "no such file".
  for (const args of [['tokenizer', 'encode', '--tokenizer', loop, '--text', 'hi'], ['train', '--tokenizer', loop, '--out', join(dir, 'run'), ...TINY],
    ['sample', '--ckpt', loop], ['eval', '--ckpt', loop, '--text', 'hi'], ['train', '--init-from', loop, '--out', join(dir, 'run'), '--steps', '1']]) {
    assertOneLine(run(args), /cannot read (--tokenizer|the checkpoint) .*loop-a: a symbolic link in the path leads back to itself; check the path/);
  }
  // A folder to create where a file is.
  assertOneLine(run(['tokenizer', 'train', '--data', join(root, 'abc.txt'), '--vocab', '260', '--out', join(root, 'abc.txt', 'tok.json')]), /abc\.txt: a file is there, where a folder should be|a path component is a file, not a folder/);
  assertOneLine(run(['train', '--data', join(root, 'abc.txt'), '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '200000', '--steps', '1', '--backend', 'cpu', '--quiet', '--out', join(dir, 'big')]),
    // ~8.5 GiB: past wasm32's 4 GiB; on a machine with less memory than that, refused before the backend.
    /the cpu backend's memory is full: [\d.]+ GiB wanted, past the 4 GiB a wasm32 memory holds; use a smaller batch|--batch 200000 of 16-token sequences needs ~[\d.]+ GiB for this model, more than this machine's/);
  assertOneLine(run(['train', '--data', join(root, 'abc.txt'), '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '1000000000', '--steps', '1', '--quiet', '--out', join(dir, 'bigger')]),
    /^minigpt: error: --batch 1000000000 of 16-token sequences needs ~[\d.]+ GiB for this model, more than this machine's [\d.]+ GiB; use a smaller --batch \(--accum keeps the tokens per step\)$/);
});

test('what a broken or mismatched input really is, in one line: shards without meta.json, an empty metrics.jsonl, --clean or --text-field on shards, a weight_map that leaves its folder', () => {
  const dir = mkdtempSync(join(root, 'named-'));
  const shards = join(dir, 'shards');
  assert.equal(run(['prepare', '--data', join(root, 'abc.txt'), '--tokenizer', 'char', '--out', shards]).status, 0);
  assertOneLine(run(['train', '--data', shards, '--clean', 'lowercase', '--out', join(dir, 'run'), ...TINY]), /--clean has no effect on .*shards: prepared shards were cleaned when prepared/);
  assertOneLine(run(['train', '--data', shards, '--text-field', 'body', '--out', join(dir, 'run'), ...TINY]), /--text-field has no effect on .*shards: prepared shards were read when prepared \(prepare --text-field\); drop the flag, or give it with --val-data$/);
  writeFileSync(join(dir, 'snow.txt'), 'the cat \u2603 sat\n');
  assertOneLine(run(['prepare', '--data', join(dir, 'snow.txt'), '--tokenizer', ck, '--out', join(dir, 'snow-shards')]), /snow\.txt: character "\u2603" \(U\+2603\) is not in the tokenizer's vocabulary \(its \d+ characters\); the given tokenizer has no token for it/);
  rmSync(join(shards, 'meta.json'));
  assertOneLine(run(['train', '--data', shards, '--out', join(dir, 'run'), ...TINY]), /shards looks like a shards folder from minigpt prepare, but its meta\.json is missing; prepare the data again/);
  mkdirSync(join(dir, 'empty-run'));
  writeFileSync(join(dir, 'empty-run', 'metrics.jsonl'), '');
  assertOneLine(run(['plot', join(dir, 'empty-run'), '--out', join(dir, 'p.svg')]), /metrics\.jsonl has no loss records to plot/);
  // A start line alone has nothing to draw; a broken line is skipped and said, and the report counts points.
  writeFileSync(join(dir, 'empty-run', 'metrics.jsonl'), '{"step":0,"event":"start"}\n');
  assertOneLine(run(['plot', join(dir, 'empty-run'), '--out', join(dir, 'p.svg')]), /metrics\.jsonl has no loss records to plot/);
  writeFileSync(join(dir, 'empty-run', 'metrics.jsonl'), '{"step":0,"event":"start"}\n{"step":1,"loss":3}\n{"step":2,"lo\n{"step":2,"loss":2.5}\n{"step":2,"val_loss":2.7}\n');
  const drawn = run(['plot', join(dir, 'empty-run'), '--out', join(dir, 'p.svg')]);
  assert.equal(drawn.status, 0, drawn.stderr);
  assert.equal(drawn.stderr.trim(), `note: skipped line 3 of ${join(dir, 'empty-run', 'metrics.jsonl')}: not a JSON record`);
  assert.match(drawn.stdout, /empty-run: 2 train losses, 1 val loss\)/);
  const hf = join(dir, 'hf');
  assert.equal(run(['export', '--ckpt', ck, '--format', 'hf', '--out', hf]).status, 0);
  rmSync(join(hf, 'model.safetensors'));
  writeFileSync(join(hf, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.embed_tokens.weight': '../../abc.txt' } }));
  assertOneLine(run(['import', '--from', hf, '--out', join(dir, 'imported')]), /weight_map names "\.\.\/\.\.\/abc\.txt", not a file beside it/);
  assertOneLine(run(['import', '--from', join(ck, 'checkpoint'), '--out', join(dir, 'imported')]), /config\.json is a minigpt checkpoint's config, not a Hugging Face model's: use the checkpoint as it is/);
  const config = JSON.parse(readFileSync(join(hf, 'config.json'), 'utf8'));
  writeFileSync(join(hf, 'config.json'), JSON.stringify({ ...config, num_attention_heads: 0 }));
  assertOneLine(run(['import', '--from', hf, '--out', join(dir, 'imported')]), /"num_attention_heads" must be a whole number of at least 1 \(got 0\)/);
  writeFileSync(join(hf, 'config.json'), JSON.stringify({ ...config, rms_norm_eps: 'x' }));
  const eps = run(['import', '--from', hf, '--out', join(dir, 'imported')]);
  assertOneLine(eps, /config\.json: "rms_norm_eps" is missing or not a number$/);
  assert.equal(eps.stderr.split('config.json').length, 2, 'the file is named once');
});

test('settings the help promises: a resumed run refuses other cleaning, eval and resume of a run read its data as it did (--invalid-utf8 replace), lr-find on shards takes their tokenizer', () => {
  const dir = mkdtempSync(join(root, 'promised-'));
  const runDir = join(dir, 'run');
  assert.equal(run(['train', '--data', join(root, 'abc.txt'), '--out', runDir, '--steps', '2', ...TINY]).status, 0);
  assertOneLine(run(['train', '--resume', runDir, '--steps', '3', '--clean', 'lowercase', '--quiet']), /--clean lowercase \(the run has nfc,newlines,page-breaks,control-chars,blank-lines\): a resumed run keeps/);
  assert.equal(run(['train', '--resume', runDir, '--steps', '3', '--clean', 'nfc,newlines,page-breaks,control-chars,blank-lines', '--quiet']).status, 0, 'the same cleaning, spelt out, is no conflict');

  writeFileSync(join(dir, 'bad.txt'), Buffer.concat(Array.from({ length: 60 }, () => Buffer.from([...Buffer.from('the cat sat '), 0xff, ...Buffer.from(' on the mat\n')]))));
  const badRun = join(dir, 'bad-run');
  assert.equal(run(['train', '--data', join(dir, 'bad.txt'), '--invalid-utf8', 'replace', '--out', badRun, '--steps', '1', ...TINY]).status, 0);
  // The run records that it replaced bad bytes: eval and resume read its data so unless told otherwise.
  assertOneLine(run(['eval', '--ckpt', badRun, '--backend', 'reference', '--invalid-utf8', 'error']), /invalid UTF-8 at byte 12 .*pass --invalid-utf8 replace/);
  for (const flags of [[], ['--invalid-utf8', 'replace']]) {
    const replaced = run(['eval', '--ckpt', badRun, '--backend', 'reference', ...flags]);
    assert.equal(replaced.status, 0, replaced.stderr);
    assert.match(replaced.stdout, /^validation split of the run's data \(bad\.txt\): loss \d\.\d{4}/);
  }
  const resumed = run(['train', '--resume', badRun, '--steps', '2', '--quiet']);
  assert.equal(resumed.status, 0, resumed.stderr);

  const shards = join(dir, 'bpe-shards');
  assert.equal(run(['prepare', '--data', join(root, 'abc.txt'), '--tokenizer', 'bpe', '--bpe-vocab', '270', '--out', shards]).status, 0);
  const lr = run(['lr-find', '--data', shards, '--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8', '--batch', '2', '--steps', '10', '--backend', 'reference', '--json', '--out', join(dir, 'lr.svg')]);
  assert.equal(lr.status, 0, lr.stderr);
});

test('under a virtual-memory limit the cpu backend cannot reserve its memory: one line saying so and what to do, no run folder', (t) => {
  if (spawnSync('prlimit', ['--version']).status !== 0) return t.skip('no prlimit (util-linux) here');
  const limit = `--as=${8 * 2 ** 30}`;
  const probe = spawnSync('prlimit', [limit, process.execPath, '-e', 'new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true })']);
  if (probe.status === 0) return t.skip('this Node reserves a wasm memory within the limit (Node 24 falls back to a smaller reservation)');
  const out = join(root, 'limited-run');
  const r = spawnSync('prlimit', [limit, process.execPath, CLI, 'train', '--out', out, ...TINY.map((a) => (a === 'reference' ? 'cpu' : a))], { encoding: 'utf8', cwd: root, timeout: 60_000 });
  assertOneLine(r, /the cpu backend could not reserve its WebAssembly memory .*ulimit -v.*raise the limit, or use --backend reference/);
  assert.ok(!readdirSync(root).includes('limited-run'));
});

test('text past what one string holds (a 3 GiB file, sparse here) is one line pointing at prepare; so is a deleted current folder', () => {
  const big = join(root, 'huge.txt');
  writeFileSync(big, '');
  spawnSync('truncate', ['-s', '3G', big]);
  if (statSync(big).size !== 3 * 2 ** 30) return;
  for (const args of [['train', '--data', big, '--out', join(root, 'too-large-run'), ...TINY], ['tokenizer', 'train', '--data', big, '--vocab', '300', '--out', join(root, 'huge-tok.json')]]) {
    assertOneLine(run(args), /huge\.txt: too large to load as text in memory .*minigpt prepare --data PATH --out DIR/);
  }
  rmSync(big);
  const gone = join(root, 'gone');
  mkdirSync(gone);
  const r = spawnSync('sh', ['-c', `cd "${gone}" && rmdir "${gone}" && exec "${process.execPath}" "${CLI}" sample --ckpt run`], { encoding: 'utf8' });
  assertOneLine(r, /the current folder no longer exists/);
});

test('a save cut between its renames in a folder now read-only is read where it was left; a run with only best/ says so and is not overwritten', (t) => {
  const mnt = mountTmpfs('size=4m');
  if (mnt === null) return t.skip('cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)');
  const runDir = join(mnt, 'run');
  const flags = TINY.filter((a, i) => a !== '--eval-every' && TINY[i - 1] !== '--eval-every');
  assert.equal(run(['train', '--data', join(root, 'abc.txt'), '--out', runDir, '--steps', '4', '--eval-every', '2', '--keep-best', ...flags]).status, 0);
  renameSync(join(runDir, 'checkpoint'), join(runDir, '.checkpoint.old-999999-abcd1234'));
  spawnSync('mount', ['-o', 'remount,ro', mnt]);
  const sampled = run(['sample', '--ckpt', runDir, '--prompt', 'ab', '--tokens', '3', '--backend', 'reference']);
  assert.equal(sampled.status, 0, sampled.stderr);
  assert.ok(readdirSync(runDir).includes('.checkpoint.old-999999-abcd1234'), 'read where it was: the folder is read-only');
  spawnSync('mount', ['-o', 'remount,rw', mnt]);
  // No checkpoint at all, only the best one (every save of the latest failed, a full disk).
  rmSync(join(runDir, '.checkpoint.old-999999-abcd1234'), { recursive: true });
  assertOneLine(run(['sample', '--ckpt', runDir, '--prompt', 'ab']), /the run .*run has no latest checkpoint \(none was saved, or every save failed\), but its best one is .*run\/best: use that \(to train on from it: --resume .*run\/best --out DIR\)$/);
  assertOneLine(run(['train', '--data', join(root, 'abc.txt'), '--out', runDir, '--steps', '2', ...flags]), /run holds the best checkpoint of an earlier run \(.*best\), which a new run there would replace; continue from it with --resume .*best --out DIR/);
  assert.ok(existsSync(join(runDir, 'best', 'config.json')));
});
