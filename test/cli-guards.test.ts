/**
 * Nothing a user made is ever lost: commands that write --out refuse to replace a checkpoint or
 * a file that is not one of theirs unless --force is given (one clear line, exit 1, the file
 * untouched byte for byte), and flags that would be silently ignored are errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync, statSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'minigpt-guards-'));

const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });

/** Exit 1 and exactly one line on stderr, `minigpt: error: ...` matching `re`. */
function assertRefused(r: ReturnType<typeof run>, re: RegExp): void {
  assert.equal(r.status, 1, `exit ${r.status}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.trim() && !/XDG_RUNTIME_DIR/.test(l));
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0]!, /^minigpt: error: /);
  assert.match(lines[0]!, re);
}

function assertOk(r: ReturnType<typeof run>): void {
  assert.equal(r.status, 0, `exit ${r.status}; stderr: ${r.stderr}`);
}

/** Every file under `dir` (relative path -> bytes), to compare before and after. */
function snapshot(dir: string, prefix = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) for (const [k, b] of snapshot(path, `${prefix}${name}/`)) out.set(k, b);
    else out.set(prefix + name, readFileSync(path));
  }
  return out;
}

// A trained run (1 step): its checkpoint has weights, optimizer state and trainer state.
const MODEL = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '8'];
const TINY = [...MODEL, '--batch', '2', '--backend', 'reference'];
writeFileSync(join(root, 'abc.txt'), 'abcdefghijklmnopqrstuvwxyz the cat sat\n'.repeat(50));
const trained = join(root, 'trained');
const made = run(['train', '--data', join(root, 'abc.txt'), '--out', trained, '--steps', '1', ...TINY, '--eval-every', '0', '--sample-every', '0', '--quiet']);
if (made.status !== 0) throw new Error(`cannot train the fixture run: ${made.stderr}`);
const ckpt = join(trained, 'checkpoint');
const USER_TEXT = 'my notes, not a minigpt file\n';

test('init refuses to replace a trained checkpoint without --force, and replaces it with --force', () => {
  const before = snapshot(ckpt);
  assert.ok(before.has('optimizer.safetensors') && before.has('trainer_state.json'));
  assertRefused(run(['init', '--out', ckpt, '--chars', 'abc', ...MODEL]), /exists and is not empty.*--force/);
  assert.deepEqual(snapshot(ckpt), before);

  const copy = join(root, 'init-force');
  assertOk(run(['init', '--out', copy, '--chars', 'abc', ...MODEL]));
  writeFileSync(join(copy, 'NOTES.md'), USER_TEXT);
  assertOk(run(['init', '--out', copy, '--chars', 'abcd', ...MODEL, '--force']));
  assert.match(readFileSync(join(copy, 'tokenizer.minigpt.json'), 'utf8'), /"d"/);
  assert.equal(readFileSync(join(copy, 'NOTES.md'), 'utf8'), USER_TEXT, '--force replaces the checkpoint, not the notes in its folder');
  // A file where the checkpoint would go stays refused, even with --force.
  writeFileSync(join(root, 'notes-init.txt'), USER_TEXT);
  assertRefused(run(['init', '--out', join(root, 'notes-init.txt'), '--chars', 'abc', ...MODEL, '--force']), /notes-init\.txt/);
  assert.equal(readFileSync(join(root, 'notes-init.txt'), 'utf8'), USER_TEXT);
  assert.match(run(['init', '--help']).stdout, /--force/);
});

test('import refuses to replace a trained checkpoint without --force, and replaces it with --force', () => {
  const hf = join(root, 'hf');
  assertOk(run(['export', '--ckpt', trained, '--out', hf]));
  const before = snapshot(ckpt);
  assertRefused(run(['import', '--from', hf, '--out', ckpt]), /exists and is not empty.*--force/);
  assert.deepEqual(snapshot(ckpt), before);

  const target = join(root, 'import-force');
  assertOk(run(['init', '--out', target, '--chars', 'xyz', ...MODEL]));
  assertOk(run(['import', '--from', hf, '--out', target, '--force']));
  assert.match(readFileSync(join(target, 'tokenizer.minigpt.json'), 'utf8'), /"q"/);
  assert.match(run(['import', '--help']).stdout, /--force/);
});

test('import --from a file or a missing folder: one line saying it must be a Hugging Face model directory', () => {
  writeFileSync(join(root, 'small.txt'), 'hello\n');
  const out = join(root, 'never-imported');
  assertRefused(run(['import', '--from', join(root, 'small.txt'), '--out', out]), /--from .*small\.txt is a file; --from must be a Hugging Face model directory \(config\.json \+ \*\.safetensors\)/);
  assertRefused(run(['import', '--from', join(root, 'no-such-dir'), '--out', out]), /no-such-dir does not exist; --from must be a Hugging Face model directory/);
});

test('an --out where no folder can be made (under /proc) is a one-line error at once, not a hang', { skip: process.platform !== 'linux' && 'Linux only' }, () => {
  const t0 = Date.now();
  assertRefused(run(['init', '--out', '/proc/minigpt-no-such/x', '--chars', 'xyz', ...MODEL]), /cannot mkdir \/proc\/minigpt-no-such: no such file or folder/);
  assert.ok(Date.now() - t0 < 30_000);
});

test('a Hugging Face model directory as --ckpt: the advice names the minigpt command (a library caller is told readHfModel)', () => {
  const hf = join(root, 'hf-as-ckpt');
  mkdirSync(hf, { recursive: true });
  writeFileSync(join(hf, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'] }));
  assertRefused(run(['sample', '--ckpt', hf, '--prompt', 'a']), /looks like a Hugging Face model directory: convert it with minigpt import --from .*hf-as-ckpt --out DIR$/);
});

test('plot refuses to replace a file that is not a plot it drew (a user\'s own SVG too); replaces its own plots, earlier ones included, or anything with --force', () => {
  const keep = join(root, 'keep.txt');
  writeFileSync(keep, USER_TEXT);
  assertRefused(run(['plot', trained, '--out', keep]), /keep\.txt exists and is not a minigpt plot.*--force/);
  assert.equal(readFileSync(keep, 'utf8'), USER_TEXT);
  const drawing = join(root, 'logo.svg'), LOGO = '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg>\n';
  writeFileSync(drawing, LOGO);
  assertRefused(run(['plot', trained, '--out', drawing]), /logo\.svg exists and is not a minigpt plot.*--force/);
  assert.equal(readFileSync(drawing, 'utf8'), LOGO);

  // A plot drawn before plots were marked (data-minigpt="plot"): known by its opening tag.
  const svg = join(root, 'old.svg');
  writeFileSync(svg, '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="440" viewBox="0 0 760 440" font-family="sans-serif" font-size="12">\n</svg>\n');
  assertOk(run(['plot', trained, '--out', svg]));
  assert.match(readFileSync(svg, 'utf8'), /^<svg [^>]*data-minigpt="plot"[\s\S]*<path /);
  assertOk(run(['plot', trained, '--out', svg]));

  assertOk(run(['plot', trained, '--out', keep, '--force']));
  assert.match(readFileSync(keep, 'utf8'), /^<svg/);
});

test('tokenizer train refuses to replace a file that is not a tokenizer; replaces a tokenizer, or anything with --force', () => {
  const data = join(root, 'words.txt');
  writeFileSync(data, 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n'.repeat(20));
  const train = (out: string, ...extra: string[]) => run(['tokenizer', 'train', '--data', data, '--vocab', '270', '--out', out, ...extra]);
  const keep = join(root, 'keep2.txt');
  writeFileSync(keep, USER_TEXT);
  assertRefused(train(keep), /keep2\.txt exists and is not a minigpt tokenizer.*--force/);
  assert.equal(readFileSync(keep, 'utf8'), USER_TEXT);
  const other = join(root, 'other.json');
  writeFileSync(other, '{"name": "my settings"}\n');
  assertRefused(train(other), /other\.json exists and is not a minigpt tokenizer/);
  assert.equal(readFileSync(other, 'utf8'), '{"name": "my settings"}\n');

  const tok = join(root, 'tok.json');
  assertOk(train(tok));
  assertOk(train(tok, '--no-eot'));
  assert.equal(JSON.parse(readFileSync(tok, 'utf8')).type, 'bpe');
  assertOk(train(keep, '--force'));
  assert.equal(JSON.parse(readFileSync(keep, 'utf8')).type, 'bpe');

  // A checkpoint's own tokenizer (its manifest checks it) is never replaced: that would break the checkpoint.
  const before = snapshot(ckpt);
  for (const extra of [[], ['--force']]) {
    assertRefused(train(join(ckpt, 'tokenizer.minigpt.json'), ...extra), /tokenizer\.minigpt\.json is part of the checkpoint in .*checkpoint \(its manifest\.json checks it\); writing it would break that checkpoint/);
  }
  assert.deepEqual(snapshot(ckpt), before);
});

test('lr-find refuses to replace a file that is not a plot minigpt drew; replaces an earlier lr-find plot, or anything with --force', () => {
  const lr = (out: string, ...extra: string[]) => run(['lr-find', '--data', join(root, 'abc.txt'), '--steps', '10', ...TINY, '--out', out, ...extra]);
  const keep = join(root, 'keep3.txt');
  writeFileSync(keep, USER_TEXT);
  assertRefused(lr(keep), /keep3\.txt exists and is not a minigpt plot.*--force/);
  assert.equal(readFileSync(keep, 'utf8'), USER_TEXT);

  const svg = join(root, 'lr.svg');
  assertOk(lr(svg));
  assertOk(lr(svg));
  assertOk(lr(keep, '--force'));
  assert.match(readFileSync(keep, 'utf8'), /^<svg/);
});

test('lr-find --ckpt with a model-shape flag is an error, not silently ignored', () => {
  const out = join(root, 'never-lr.svg');
  for (const flags of [['--d-model', '64'], ['--n-layers', '6'], ['--tie-embeddings'], ['--vocab-size=300']]) {
    const name = flags[0]!.split('=')[0]!;
    assertRefused(run(['lr-find', '--ckpt', trained, ...flags, '--steps', '10', '--out', out]), new RegExp(`${name} conflicts with --ckpt \\(the checkpoint fixes the model shape\\)`));
  }
  assert.throws(() => statSync(out));
});

test('export picks the format from --out: x.gguf is a GGUF file; --format hf with a .gguf name is an error', () => {
  const gguf = join(root, 'model.gguf');
  assertOk(run(['export', '--ckpt', trained, '--out', gguf]));
  assert.ok(statSync(gguf).isFile());
  assert.equal(readFileSync(gguf).subarray(0, 4).toString('latin1'), 'GGUF');

  const named = join(root, 'named.gguf');
  assertRefused(run(['export', '--ckpt', trained, '--format', 'hf', '--out', named]), /--format hf .*\.gguf/);
  assert.throws(() => statSync(named));
  assert.match(run(['export', '--help']).stdout, /\.gguf/);
});

test('export --force replaces only an earlier export: never a folder with other things in it, a run, or a checkpoint', () => {
  const copy = join(root, 'run-copy');
  cpSync(trained, copy, { recursive: true });
  const notes = join(root, 'my-folder');
  mkdirSync(notes);
  writeFileSync(join(notes, 'notes.txt'), USER_TEXT);
  for (const [out, re] of [
    [notes, /my-folder holds notes\.txt, which no model export has; --force replaces only an earlier export/],
    [copy, /run-copy holds checkpoint, loss\.svg, metrics\.jsonl.*which no model export has/],
    [join(copy, 'checkpoint'), /checkpoint holds manifest\.json, optimizer\.safetensors, tokenizer\.minigpt\.json.*which no model export has/],
  ] as const) {
    const before = snapshot(out);
    assertRefused(run(['export', '--ckpt', copy, '--out', out, '--force']), re);
    assert.deepEqual(snapshot(out), before, `${out} changed`);
  }
  // A checkpoint reduced to config.json and weights is still no export.
  const bare = join(root, 'bare-ckpt');
  mkdirSync(bare);
  cpSync(join(ckpt, 'config.json'), join(bare, 'config.json'));
  cpSync(join(ckpt, 'model.safetensors'), join(bare, 'model.safetensors'));
  assertRefused(run(['export', '--ckpt', copy, '--out', bare, '--force']), /bare-ckpt is a minigpt checkpoint, not an export/);
  // An earlier export is replaced with --force (and refused without it).
  const hf = join(root, 'hf-out');
  assertOk(run(['export', '--ckpt', copy, '--out', hf]));
  assertRefused(run(['export', '--ckpt', copy, '--out', hf]), /exists and is not empty.*--force/);
  assertOk(run(['export', '--ckpt', copy, '--out', hf, '--force']));
  assert.ok(readdirSync(hf).includes('model.safetensors'));
});

test('Ctrl-C during an export leaves no half-written temporary file, says so, and exits 130; a stale one from a killed export goes at the next', async () => {
  const { spawn } = await import('node:child_process');
  const { existsSync } = await import('node:fs');
  const dir = join(root, 'interrupted-export');
  mkdirSync(dir);
  // ~40 MB of weights: its GGUF takes long enough to write to be caught in the middle.
  assertOk(run(['init', '--out', join(dir, 'm'), '--chars', 'abc', '--d-model', '512', '--n-heads', '8', '--n-layers', '3', '--context', '16']));
  const stale = join(dir, '.m.gguf.tmp-999999-abcd1234');
  writeFileSync(stale, 'left by an export that was killed');
  const p = spawn(process.execPath, [CLI, 'export', '--ckpt', join(dir, 'm'), '--out', join(dir, 'm.gguf')], { cwd: root });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((done) => p.on('exit', (code) => done(code)));
  let caught = false;
  for (let i = 0; i < 2000 && p.exitCode === null; i++) {
    if (readdirSync(dir).some((n) => n.startsWith('.m.gguf.tmp-') && !n.includes('999999'))) {
      p.kill('SIGINT');
      caught = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const code = await exited;
  console.log(`# export interrupted while writing: ${caught}`);
  if (caught) {
    assert.equal(code, 130, stderr);
    assert.match(stderr, /^\nminigpt: interrupted; nothing half-written was left\n$/);
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.m.gguf.tmp-') && !n.includes('999999')), []);
  }
  assert.ok(existsSync(stale), 'the stale temporary stays until a write of the same name');
  assertOk(run(['export', '--ckpt', join(dir, 'm'), '--out', join(dir, 'm.gguf'), '--force']));
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), []);
  // A folder output's staging folders (an HF export killed mid-write, and one killed between its renames) go too.
  mkdirSync(join(dir, '.m.hf.tmp-999999-abcd1234'));
  writeFileSync(join(dir, '.m.hf.tmp-999999-abcd1234', 'model.safetensors'), 'half');
  mkdirSync(join(dir, '.m.hf.old-999999-abcd1234'));
  assertOk(run(['export', '--ckpt', join(dir, 'm'), '--format', 'hf', '--out', join(dir, 'm.hf')]));
  assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), []);
});

test('a run whose .lock is a folder, or whose checkpoint lost config.json: one line saying which, not an internal error', () => {
  const locked = join(root, 'lock-folder');
  cpSync(trained, locked, { recursive: true });
  mkdirSync(join(locked, '.lock'));
  assertRefused(run(['train', '--resume', locked, '--steps', '2', '--quiet']), /\.lock is a folder, where the run's lock file goes; remove it$/);
  const broken = join(root, 'no-config');
  cpSync(trained, broken, { recursive: true });
  rmSync(join(broken, 'checkpoint', 'config.json'));
  assertRefused(run(['sample', '--ckpt', broken, '--prompt', 'a']), /no-config\/checkpoint has no config\.json; the checkpoint is incomplete$/);
});

test('Ctrl-C stops bench mid-measurement (its steps let the event loop turn), exit 130', async () => {
  const { spawn } = await import('node:child_process');
  const p = spawn(process.execPath, [CLI, 'bench', '--config', 'nanogpt-cpu', '--backend', 'cpu', '--threads', '1', '--steps', '1000000'], { cwd: root });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((done) => p.on('exit', (code) => done(code)));
  const stuck = setTimeout(() => p.kill('SIGKILL'), 60_000);
  try {
    await new Promise((r) => setTimeout(r, 2_000)); // into the timed steps (2 warmup steps take well under that)
    p.kill('SIGINT');
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /minigpt: interrupted/);
  } finally {
    clearTimeout(stuck);
    p.kill('SIGKILL');
  }
});

test('plot --out /dev/stdout writes the picture to stdout, its report to stderr, and leaves /dev/stdout a link', () => {
  const dir = join(root, 'plot-stdout');
  mkdirSync(dir);
  writeFileSync(join(dir, 'metrics.jsonl'), '{"step":1,"loss":3}\n{"step":2,"loss":2.5}\n');
  const r = run(['plot', dir, '--out', '/dev/stdout']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^<svg [^]*<\/svg>\n?$/);
  assert.match(r.stderr, /^wrote \/dev\/stdout \(plot-stdout: 2 train losses, 0 val losses\)\n$/);
  assert.ok(lstatSync('/dev/stdout').isSymbolicLink() || !lstatSync('/dev/stdout').isFile(), '/dev/stdout is not replaced by a file');
});
