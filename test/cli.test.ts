/** The CLI end to end: init and eval, and one clear line for every mistake. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, readFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, computeLogits } from '../src/inference.js';
import { runBench } from '../src/bench.js';
import { processStartMark } from '../src/util/fs.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
// An empty working directory: no runs/latest to fall back on.
const EMPTY_CWD = mkdtempSync(join(tmpdir(), 'minigpt-cwd-'));
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: EMPTY_CWD });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const SMALL = ['--d-model', '16', '--n-heads', '2', '--n-layers', '2', '--context', '32'];

test('init writes a checkpoint and eval --json scores text with per-token log-probabilities', async () => {
  const dir = join(await mkdtemp(join(tmpdir(), 'minigpt-cli-')), 'ck');
  const init = run('init', '--out', dir, '--chars', 'abcdefgh .', ...SMALL, '--seed', '5');
  assert.equal(init.code, 0, init.err);
  const r = run('eval', '--ckpt', dir, '--text', 'abc deh.', '--json');
  assert.equal(r.code, 0, r.err);
  const score = JSON.parse(r.out);
  assert.deepEqual(score.ids, [2, 3, 4, 0, 5, 6, 9, 1]);
  assert.equal(score.logprobs.length, 7);
  // Each log-probability is the log-softmax of the logits at the previous position.
  const { model } = await loadModel(dir);
  const logits = await computeLogits(model, score.ids);
  const V = model.config.vocab_size;
  for (let i = 0; i < 7; i++) {
    const row = logits.subarray(i * V, i * V + V);
    const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
    assert.ok(Math.abs(row[score.ids[i + 1]] - lse - score.logprobs[i]) < 1e-5);
  }
  const mean = -score.logprobs.reduce((a: number, b: number) => a + b, 0) / 7;
  assert.ok(Math.abs(score.loss - mean) < 1e-6);
});

test('init takes its vocabulary from --data and the model flags shape the model', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), 'the cat sat on the mat\n');
  const dir = join(root, 'ck');
  const r = run('init', '--out', dir, '--data', join(root, 'corpus.txt'), '--d-model', '24', '--n-heads', '3', '--n-kv-heads', '1', '--n-layers', '1', '--mlp', 'gelu', '--tie-embeddings', '--qkv-bias', '--init', 'xavier-normal');
  assert.equal(r.code, 0, r.err);
  const { model, tokenizer } = await loadModel(dir);
  assert.equal(tokenizer.vocabSize, 12); // 11 characters and <|endoftext|>
  assert.deepEqual(
    [model.config.vocab_size, model.config.d_model, model.config.n_heads, model.config.n_kv_heads, model.config.n_layers, model.config.mlp, model.config.intermediate_size, model.config.tie_embeddings, model.config.qkv_bias, model.config.init],
    [12, 24, 3, 1, 1, 'gelu', 96, true, true, 'xavier-normal'],
  );
});

test('every bad invocation prints one error line, no stack trace, and exits 1', async () => {
  const dir = join(await mkdtemp(join(tmpdir(), 'minigpt-cli-')), 'ck');
  assert.equal(run('init', '--out', dir, '--chars', 'ab', ...SMALL).code, 0);
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['init', '--bogus'], /unknown flag --bogus \(see --help\)/],
    [['train', '--stpes', '3'], /unknown flag --stpes \(did you mean --steps\?\) \(see --help\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--d-model', 'x'], /--d-model must be an integer \(got "x"\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--n-layers', '0'], /--n-layers must be at least 1/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--d-model', '0x10'], /--d-model must be an integer \(got "0x10"\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--seed', '99999999999999999999'], /--seed must be at most 9007199254740991 \(got 99999999999999999999\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--rope-theta', '0x100'], /--rope-theta must be a number \(got "0x100"\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--d-model', '30', '--n-heads', '4'], /--n-heads \(4\) must divide --d-model \(30\)/],
    [['init', '--out', dir + '2', '--chars', 'ab', '--mlp', 'relu'], /--mlp must be one of swiglu, gelu/],
    [['init', '--out', dir + '2'], /give exactly one of --data FILE or --chars STRING/],
    [['init', '--out', dir + '2', '--data', '/no/such/file.txt'], /no\/such\/file\.txt/],
    [['init', '--out', dir + '2', '--chars'], /--chars needs a value/],
    [['eval', '--text', 'ab'], /no --ckpt given and no previous run found/],
    [['eval', '--ckpt', '/no/such/ckpt', '--text', 'ab'], /does not exist/],
    [['eval', '--ckpt', dir, '--text', 'abz'], /character "z" \(U\+007A\) at line 1, column 3/],
    [['eval', '--ckpt', dir, '--text', 'a'], /at least 2/],
    // An empty path is no path: it used to mean "not given" (train --data= trained the default model).
    [['train', '--data='], /--data is empty; give it a value \(PATH\), or leave the flag out/],
    [['train', '--resume=', '--steps', '1'], /--resume is empty/],
    [['export', '--ckpt', dir, '--out='], /--out is empty/],
    [['sample', '--ckpt', ''], /--ckpt is empty/],
    [['lr-find', '--bpe-vocab', '300'], /--bpe-vocab goes with --tokenizer bpe/],
  ];
  for (const [args, re] of cases) {
    const r = run(...args);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}, stderr ${r.err}`);
    assert.match(r.err, re, args.join(' '));
    assert.equal(r.err.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.err}`);
    assert.doesNotMatch(r.err, /\s+at\s.+:\d+:\d+/, 'no stack trace');
  }
});

test('an error that quotes a file or a path with newlines or control characters in it is still one line, with them escaped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(dir, 't.json'), 'x\ny\u0001z');
  const r = run('tokenizer', 'encode', '--tokenizer', join(dir, 't.json'), '--text', 'hi');
  assert.equal(r.code, 1);
  assert.equal(r.err.split('\n').length, 2, r.err);
  assert.match(r.err, /"x\\ny\\u0001z" is not valid JSON/);
  const p = run('eval', '--ckpt', join(dir, 'no\nsuch'), '--text', 'ab');
  assert.equal(p.code, 1);
  assert.match(p.err, /^minigpt: error: checkpoint .*no\\nsuch does not exist\n$/);
});

test('--help lists every flag of the command', () => {
  const r = run('init', '--help');
  assert.equal(r.code, 0);
  for (const flag of ['--out', '--data', '--chars', '--seed', '--vocab-size', '--d-model', '--n-heads', '--n-kv-heads', '--n-layers', '--context', '--mlp', '--intermediate-size', '--rms-norm-eps', '--rope-theta', '--tie-embeddings', '--qkv-bias', '--dropout', '--init']) {
    assert.ok(r.out.includes(flag), `init --help mentions ${flag}`);
  }
  assert.match(run('--help').out, /eval/);
});

const TRAIN_TINY = ['--d-model', '16', '--n-heads', '2', '--n-layers', '1', '--context', '16', '--batch', '4', '--backend', 'reference', '--sample-every', '0'];
const CORPUS = Array.from({ length: 200 }, (_, i) => `the ${['cat', 'dog'][i % 2]} sat on the mat.`).join('\n');

test('train says when its final evaluation covered a sample of a long validation split (4096 windows spread over it), not the whole of it', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  // 700,000 characters: a validation split of 70,000 tokens, more than 4096 windows of 16.
  await writeFile(join(root, 'long.txt'), CORPUS.repeat(Math.ceil(700_000 / CORPUS.length)).slice(0, 700_000));
  const t = spawnSync(process.execPath, [CLI, 'train', '--data', join(root, 'long.txt'), '--steps', '2', '--eval-every', '0', '--out', join(root, 'run'), ...TRAIN_TINY], { encoding: 'utf8', cwd: root });
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stderr, /step 2: final val loss \d\.\d{4} over 4,096 windows spread over the validation split \(65,536 of its 70,000 tokens, /);
  assert.match(t.stdout, /final val loss\s+\d\.\d{4} \(4,096 windows spread over the validation split, 65,536 of its 70,000 tokens; minigpt eval reproduces it\)/);
});

test('one run folder per run: a default name taken already gets -2, and a run being trained is locked against a second process', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  // The names of the next few seconds taken (as by runs started at the same time): this one takes -2.
  const stamp = (t: number): string => new Date(t).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const now = Date.now();
  for (let s = 0; s < 6; s++) await mkdir(join(root, 'runs', `run-${stamp(now + s * 1000)}`), { recursive: true });
  const t = spawnSync(process.execPath, [CLI, 'train', '--data', join(root, 'corpus.txt'), '--steps', '2', '--eval-every', '0', '--quiet', ...TRAIN_TINY], { encoding: 'utf8', cwd: root });
  assert.equal(t.status, 0, t.stderr);
  const made = (await readdir(join(root, 'runs'))).filter((n) => n.endsWith('-2'));
  assert.equal(made.length, 1, (await readdir(join(root, 'runs'))).join(', '));
  const runDir = join(root, 'runs', made[0]!);
  assert.deepEqual((await readdir(runDir)).sort(), ['checkpoint', 'loss.svg', 'metrics.jsonl'], 'the lock is gone once the run ends');

  // A lock held by a live process (this test's) refuses the run; one left by a process that is gone is taken over.
  await writeFile(join(runDir, '.lock'), `${process.pid}\n`);
  const resume = (): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [CLI, 'train', '--resume', runDir, '--steps', '3', '--quiet'], { encoding: 'utf8', cwd: root });
  const refused = resume();
  assert.equal(refused.status, 1);
  assert.equal(refused.stderr, `minigpt: error: ${runDir} is being trained by another process (pid ${process.pid}); wait for it to end, or choose another --out (if no minigpt runs as pid ${process.pid}, delete ${join(runDir, '.lock')})\n`);
  const gone = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  await writeFile(join(runDir, '.lock'), gone.stdout);
  const taken = resume();
  assert.equal(taken.status, 0, String(taken.stderr));
  assert.ok(!(await readdir(runDir)).includes('.lock'));
  const mark = processStartMark(process.pid);
  if (mark !== undefined) {
    // With the start mark (Linux): the live pid's own mark refuses; another mark is a pid handed out
    // again (a container restarted after a kill), and the lock is taken over.
    await writeFile(join(runDir, '.lock'), `${process.pid}\n${mark}\n`);
    const again = spawnSync(process.execPath, [CLI, 'train', '--resume', runDir, '--steps', '4', '--quiet'], { encoding: 'utf8', cwd: root });
    assert.match(String(again.stderr), /is being trained by another process/);
    await writeFile(join(runDir, '.lock'), `${process.pid}\n${mark.replace(/\d+$/, (t) => String(Number(t) + 1))}\n`);
    const retaken = spawnSync(process.execPath, [CLI, 'train', '--resume', runDir, '--steps', '4', '--quiet'], { encoding: 'utf8', cwd: root });
    assert.equal(retaken.status, 0, String(retaken.stderr));
    assert.ok(!(await readdir(runDir)).includes('.lock'));
    // A lock from another pid namespace (another container): its pid means nothing here, so it
    // holds while its process touches it, and is taken over once untouched for 5 minutes.
    await writeFile(join(runDir, '.lock'), `1\n${mark}\npid:[1]\n`);
    const other = spawnSync(process.execPath, [CLI, 'train', '--resume', runDir, '--steps', '5', '--quiet'], { encoding: 'utf8', cwd: root });
    assert.match(String(other.stderr), /is being trained by a process in another pid namespace \(pid 1 there: another container\?\), which touched its lock \d+ s ago; .*a lock untouched for 5 minutes is taken over/);
    const old = new Date(Date.now() - 6 * 60_000);
    utimesSync(join(runDir, '.lock'), old, old);
    const taken2 = spawnSync(process.execPath, [CLI, 'train', '--resume', runDir, '--steps', '5', '--quiet'], { encoding: 'utf8', cwd: root });
    assert.equal(taken2.status, 0, String(taken2.stderr));
  }
});

test('train -> sample -> eval --data -> plot, from the command line', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const runDir = join(root, 'run');
  const t = spawnSync(process.execPath, [CLI, 'train', '--data', join(root, 'corpus.txt'), '--steps', '30', '--eval-every', '10', '--keep-best', '--out', runDir, ...TRAIN_TINY], { encoding: 'utf8', cwd: root });
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /done: 30 steps/);
  assert.match(t.stdout, /best checkpoint run\/best \(step [123]0, val loss \d\.\d{4}\)/);
  assert.match(t.stdout, /best val loss\s+\d\.\d{4}/);
  assert.match(t.stderr, /step 30\/30 loss \d\.\d{4} lr [\d.e+-]+ [\d.]+k? tok\/s ETA/);
  assert.match(t.stderr, /step 30: final val loss \d\.\d{4} over the whole validation split \([\d,]+ tokens, \d\.\d{3} bits per byte\)/);
  const s = spawnSync(process.execPath, [CLI, 'sample', '--prompt', 'the ', '--tokens', '12', '--seed', '3'], { encoding: 'utf8', cwd: root });
  assert.equal(s.status, 0, s.stderr);
  assert.equal(s.stdout.length, 'the '.length + 12 + 1, 'uses runs/latest when --ckpt is absent');
  const e = spawnSync(process.execPath, [CLI, 'eval', '--ckpt', runDir, '--data', join(root, 'corpus.txt'), '--json'], { encoding: 'utf8', cwd: root });
  assert.equal(e.status, 0, e.stderr);
  const ev = JSON.parse(e.stdout);
  assert.ok(ev.val_loss > 0 && ev.val_loss < Math.log(13), `val_loss ${ev.val_loss}`);
  assert.ok(Math.abs(ev.perplexity - Math.exp(ev.val_loss)) < 1e-9);
  const all = JSON.parse(run('eval', '--ckpt', runDir, '--data', join(root, 'corpus.txt'), '--all', '--json').out);
  assert.ok(all.tokens > ev.tokens * 5);
  const p = run('plot', runDir, runDir, '--out', join(root, 'cmp.svg'));
  assert.equal(p.code, 0, p.err);
  const { readFile } = await import('node:fs/promises');
  const svg = await readFile(join(root, 'cmp.svg'), 'utf8');
  assert.match(svg, /<svg/);
  // A run's checkpoint folder stands for the run, as for sample, eval and export.
  const c = run('plot', join(runDir, 'checkpoint'), join(runDir, 'checkpoint'), '--out', join(root, 'cmp2.svg'));
  assert.equal(c.code, 0, c.err);
  assert.equal(await readFile(join(root, 'cmp2.svg'), 'utf8'), svg);
});

test('lr-find prints a suggestion and writes its plot', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const r = spawnSync(process.execPath, [CLI, 'lr-find', '--data', join(root, 'corpus.txt'), '--steps', '20', '--json', '--out', join(root, 'lr.svg'), ...TRAIN_TINY.filter((a) => a !== '--sample-every' && a !== '0')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(out.suggestion > 1e-6 && out.suggestion < 1);
  assert.ok(out.curve.length >= 10);
  // A sweep that ends at a low rate never diverges: it does not call its lowest point unstable.
  const low = spawnSync(process.execPath, [CLI, 'lr-find', '--data', join(root, 'corpus.txt'), '--steps', '12', '--end', '1e-4', '--out', join(root, 'lr2.svg'), ...TRAIN_TINY.filter((a) => a !== '--sample-every' && a !== '0')], { encoding: 'utf8' });
  assert.equal(low.status, 0, low.stderr);
  assert.match(low.stdout, /^the loss was lowest at lr \S+; the sweep ended at 1e-4 before the loss diverged \(a higher --end shows where it does\)$/m);
  assert.doesNotMatch(low.stdout, /unstable/);
});

test('Ctrl-C during training saves a checkpoint and exits cleanly', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [CLI, 'train', '--data', join(root, 'corpus.txt'), '--steps', '100000', '--out', join(root, 'run'), ...TRAIN_TINY], { cwd: root });
  let err = '', out = '';
  child.stdout.on('data', (d) => { out += d; });
  await new Promise<void>((resolve) => child.stderr.on('data', (d) => {
    err += d;
    if (/step 20\//.test(err)) resolve();
  }));
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 130, err); // the shell's code for a run stopped by SIGINT
  assert.match(out, /stopped at step \d+ \(interrupted\); checkpoint saved/);
  const { loadCheckpoint } = await import('../src/io/checkpoint.js');
  const ckpt = await loadCheckpoint(join(root, 'run', 'checkpoint'), { training: true });
  assert.ok(ckpt.training!.step >= 20);
});

/** Starts a long tiny training run that writes no file between steps (no log, save, eval); resolves once `ready` matches its stderr. */
async function startQuietRun(root: string, ready: RegExp, extra: string[] = []) {
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [CLI, 'train', '--data', join(root, 'corpus.txt'), '--steps', '1000000', '--log-every', '1000000', '--save-every', '0', '--eval-every', '0', '--out', join(root, 'run'), ...TRAIN_TINY, ...extra], { cwd: root });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const seen = { out: '', err: '' };
  child.stdout.on('data', (d) => { seen.out += d; });
  child.stdout.on('error', () => {});
  await new Promise<void>((resolve) => child.stderr.on('data', (d) => {
    seen.err += d;
    if (ready.test(seen.err)) resolve();
  }));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => { clearTimeout(killer); resolve({ code, signal }); }));
  return { child, seen, closed };
}

test('Ctrl-C is heard between steps when no file is written for a long while (--log-every 1000000), not at the next write', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  const { child, seen, closed } = await startQuietRun(root, /step 20\//);
  child.kill('SIGINT');
  const { code, signal } = await closed;
  assert.equal(signal, null, `killed after 60 s: the interrupt was not heard; stderr: ${seen.err}`);
  assert.equal(code, 130, seen.err);
  const stopped = Number(/stopped at step (\d+) \(interrupted\)/.exec(seen.out)?.[1]);
  assert.ok(stopped >= 20 && stopped < 1_000_000, seen.out);
});

test('a second Ctrl-C says whether a checkpoint is left: with --save-every 0 none is, until the first Ctrl-C\'s save ends', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  const { child, seen, closed } = await startQuietRun(root, /step 20\//);
  child.kill('SIGINT');
  // The second as soon as the first is heard (two at once would be one signal): it may come before
  // or after the save ends.
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => { if (/^interrupted: saving/m.test(seen.err)) { clearInterval(poll); resolve(); } }, 1);
  });
  child.kill('SIGINT');
  const { code } = await closed;
  assert.equal(code, 130, seen.err);
  const saved = existsSync(join(root, 'run', 'checkpoint', 'config.json'));
  if (/^quit without saving/m.test(seen.err)) {
    // What it says matches what is on disk.
    if (saved) assert.match(seen.err, /the previous checkpoint is intact/);
    else assert.match(seen.err, /this run had saved no checkpoint yet, so this session's steps are lost/);
  } else {
    assert.ok(saved, `the first Ctrl-C's save finished first, so a checkpoint is there; stderr: ${seen.err}`);
  }
});

test('SIGHUP (the terminal closed) saves the run as Ctrl-C does; prepare on SIGHUP leaves no temporary folder', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  const { child, seen, closed } = await startQuietRun(root, /step 20\//);
  child.kill('SIGHUP');
  const { code, signal } = await closed;
  assert.equal(signal, null, `killed by ${signal}: SIGHUP was not handled; stderr: ${seen.err}`);
  assert.equal(code, 130, seen.err);
  assert.match(seen.out, /stopped at step \d+ \(interrupted\); checkpoint saved/);
  assert.ok(existsSync(join(root, 'run', 'checkpoint', 'config.json')));
  const { spawn } = await import('node:child_process');
  // A terminal that really hangs up (its master side closed: `script` killed): writes to it fail
  // with EIO, which must stop the run as a closed pipe does, not end the process before the save.
  if (spawnSync('script', ['--version']).status === 0) {
    const ttyRun = join(root, 'tty-run');
    const cmd = `exec "${process.execPath}" "${CLI}" train --data "${join(root, 'corpus.txt')}" --steps 1000000 --log-every 1000000 --save-every 0 --eval-every 0 --out "${ttyRun}" ${TRAIN_TINY.join(' ')}`;
    const term = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: root });
    let shown = '';
    term.stdout.on('data', (d) => { shown += d; });
    for (let i = 0; i < 600 && !/\d+\/1000000/.test(shown); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(shown, /\d+\/1000000/, 'the run shows its progress on the terminal');
    term.kill('SIGKILL');
    for (let i = 0; i < 600 && existsSync(join(ttyRun, '.lock')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(join(ttyRun, 'checkpoint', 'config.json')), 'the run saved when its terminal hung up');
  }
  // prepare: ~16 MB, so its temporary folder lives for seconds, long enough to be caught.
  await writeFile(join(root, 'big.txt'), CORPUS.repeat(Math.ceil(16e6 / CORPUS.length)));
  const prep = spawn(process.execPath, [CLI, 'prepare', '--data', join(root, 'big.txt'), '--tokenizer', 'gpt2', '--shard-tokens', '100000', '--out', join(root, 'shards')], { cwd: root });
  let err = '';
  prep.stderr.on('data', (d) => { err += d; });
  let caught = false;
  for (let i = 0; i < 1000 && !caught && prep.exitCode === null; i++) {
    caught = (await readdir(root)).some((n) => n.startsWith('.shards.tmp-'));
    if (!caught) await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(caught, `prepare was caught mid-write; stderr: ${err}`);
  prep.kill('SIGHUP');
  const prepCode = await new Promise((resolve) => prep.on('close', (c, sig) => resolve(c ?? sig)));
  assert.equal(prepCode, 129, err);
  assert.deepEqual((await readdir(root)).filter((n) => n.startsWith('.')), [], 'no temporary left');
});

test('two interrupts handled together (both came while a step held the thread) are one press: the run saves, it does not quit without saving', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  const { child, seen, closed } = await startQuietRun(root, /step 20\//);
  // Stopped, the process takes both signals at once when it continues, as a long step would hold them.
  child.kill('SIGSTOP');
  // kill() returns before the process has stopped; a SIGCONT that came first would cancel the stop.
  // Where /proc tells (Linux), wait until it is stopped (state T).
  const stat = `/proc/${child.pid}/stat`;
  for (let i = 0; i < 200 && existsSync(stat) && readFileSync(stat, 'utf8').replace(/^.*\) /s, '')[0] !== 'T'; i++) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGINT');
  child.kill('SIGTERM');
  child.kill('SIGCONT');
  const { code } = await closed;
  assert.equal(code, 130, seen.err);
  assert.doesNotMatch(seen.err, /^quit without saving/m);
  assert.match(seen.out, /stopped at step \d+ \(interrupted\); checkpoint saved/);
  assert.ok(existsSync(join(root, 'run', 'checkpoint', 'config.json')));
});

test('train whose output is closed (| head) stops, saves its checkpoint and exits 141, not 0: the run did not finish', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  const { child, seen, closed } = await startQuietRun(root, /step 20\//);
  child.stderr.destroy();
  child.stdout.destroy();
  const { code, signal } = await closed;
  assert.equal(signal, null, `killed after 60 s: the closed output was not heard; stderr: ${seen.err}`);
  assert.equal(code, 141);
  assert.ok(existsSync(join(root, 'run', 'checkpoint', 'config.json')), 'the checkpoint was saved');
});

test('train rejects bad flags and data with one clear line', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'empty.txt'), '');
  await writeFile(join(root, 'tiny.txt'), 'ab');
  await writeFile(join(root, 'bin.dat'), Buffer.from([0, 1, 2, 0, 255]));
  const cases: [string[], RegExp][] = [
    [['train', '--data', join(root, 'empty.txt')], /empty/],
    [['train', '--data', join(root, 'bin.dat')], /binary/],
    [['train', '--data', join(root, 'missing.txt')], /missing\.txt/],
    [['train', '--data', join(root, 'tiny.txt'), ...TRAIN_TINY], /fewer than one sequence|too few|fewer than/],
    [['train', '--lr=-1'], /--lr must be greater than 0/],
    [['train', '--lr', '-1'], /--lr: a value that starts with "-" must be written as --lr=VALUE/],
    [['train', '--amp', 'fp8'], /--amp must be one of off, fp16, bf16/],
    [['train', '--max-time', 'soon'], /--max-time must be a duration/],
    [['train', '--context', '0'], /--context must be at least 1/],
    [['train', '--resume', join(root, 'nope')], /does not exist/],
    [['train', '--config', join(root, 'missing.json')], /--config .*missing.json does not exist/],
    [['train', '--config', root], /cannot read --config .*: it is a folder; give a file name/],
    [['train', '--config', join(root, 'big-steps.json')], /--config .*big-steps\.json: "steps" has the wrong type or value \(Infinity\)/],
    [['train', '--config', join(root, 'zero-batch.json')], /--config .*zero-batch\.json: "batch" must be at least 1 \(got 0\)/],
    [['train', '--clean', 'nfc,shouting'], /--clean: unknown step "shouting"/],
  ];
  await writeFile(join(root, 'big-steps.json'), '{"steps": 1e400}');
  await writeFile(join(root, 'zero-batch.json'), '{"batch": 0}');
  for (const [args, re] of cases) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root });
    assert.equal(r.status, 1, `${args.join(' ')}: exit ${r.status} ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test('--config FILE supplies flag values and flags override it', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  await writeFile(join(root, 'corpus.txt'), CORPUS);
  await writeFile(join(root, 'cfg.json'), JSON.stringify({ d_model: 16, 'n-heads': 2, n_layers: 1, context: 16, batch: 4, steps: 7, backend: 'reference', sample_every: 0 }));
  const r = spawnSync(process.execPath, [CLI, 'train', '--config', join(root, 'cfg.json'), '--data', join(root, 'corpus.txt'), '--steps', '3', '--out', join(root, 'run')], { encoding: 'utf8', cwd: root });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /done: 3 steps/);
  const { loadCheckpoint } = await import('../src/io/checkpoint.js');
  assert.equal((await loadCheckpoint(join(root, 'run', 'checkpoint'))).config.d_model, 16);
});

test('plot tells runs of one name in different folders apart by their paths', async () => {
  const root = await mkdtemp(join(tmpdir(), 'minigpt-cli-'));
  for (const d of ['a', 'b']) {
    await mkdir(join(root, d, 'run'), { recursive: true });
    await writeFile(join(root, d, 'run', 'metrics.jsonl'), '{"step":1,"loss":3}\n{"step":2,"loss":2.5}\n');
  }
  const r = spawnSync(process.execPath, [CLI, 'plot', join('a', 'run'), join('b', 'run'), '--out', 'cmp.svg'], { encoding: 'utf8', cwd: root });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /a\/run: 2 train losses, 0 val losses; b\/run: 2 train losses, 0 val losses\)/);
  const { readFile } = await import('node:fs/promises');
  const svg = await readFile(join(root, 'cmp.svg'), 'utf8');
  assert.match(svg, />a\/run</);
  assert.match(svg, />b\/run</);
});

test('bench measures on the cpu backend and prints its JSON', () => {
  const r = spawnSync(process.execPath, [CLI, 'bench', '--config', 'nanogpt-cpu', '--steps', '2', '--backend', 'cpu', '--threads', '1', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.config, 'nanogpt-cpu');
  assert.equal(out.backend, 'cpu');
  assert.ok(out.tokensPerSecond > 0 && out.sampleTokensPerSecond > 0, r.stdout);
});

test('runBench reports each part of the measurement as it goes', async () => {
  const seen: string[] = [];
  const r = await runBench({ config: 'nanogpt-cpu', backend: 'cpu', threads: 1, steps: 3, onProgress: (part, done, total) => seen.push(`${part} ${done}/${total}`) });
  assert.equal(r.steps, 3);
  const parts = [...new Set(seen.map((s) => s.replace(/ \d+\/\d+$/, '')))];
  assert.deepEqual(parts, ['tuning kernels', 'warm-up steps', 'timed steps', 'sampled tokens']);
  assert.deepEqual(seen.filter((s) => s.startsWith('timed')), ['timed steps 0/3', 'timed steps 1/3', 'timed steps 2/3']);
  assert.equal(seen.at(-1), 'sampled tokens 224/240');
});
