/** SVG loss plots: nice axis ticks, distinct train/val styles, a legend that fits, escaping, well-formed XML. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderLossPlot, renderLineChart, linearAxis, logAxis, middleEllipsis, estimateTextWidth, type MetricRecord } from '../src/train/plot.js';

/** A small XML well-formedness check: balanced tags, quoted attributes, known entities, no stray < or &. */
function assertWellFormed(xml: string): void {
  const stack: string[] = [];
  const entity = /^&(?:#\d+|#x[0-9a-fA-F]+|amp|lt|gt|quot|apos);/;
  const checkText = (t: string, where: string): void => {
    for (let i = t.indexOf('&'); i >= 0; i = t.indexOf('&', i + 1)) assert.match(t.slice(i), entity, `bad entity in ${where}: ${t.slice(i, i + 12)}`);
    assert.ok(!t.includes('<'), `raw < in ${where}`);
  };
  let i = 0, roots = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt < 0 ? xml.length : lt);
    if (stack.length === 0) assert.match(text, /^\s*$/, 'text outside the root element');
    else checkText(text, 'text');
    if (lt < 0) break;
    const gt = xml.indexOf('>', lt);
    assert.ok(gt > lt, 'unterminated tag');
    const tag = xml.slice(lt + 1, gt);
    if (tag.startsWith('?') || tag.startsWith('!--')) { i = gt + 1; continue; }
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      assert.equal(stack.pop(), name, `mismatched </${name}>`);
    } else {
      const m = /^([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)$/.exec(tag);
      assert.ok(m, `malformed tag <${tag}>`);
      const names = [...m[2].matchAll(/([A-Za-z_][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)];
      assert.equal(new Set(names.map((a) => a[1])).size, names.length, `repeated attribute in <${tag}>`);
      for (const a of names) checkText(a[2] ?? a[3], `attribute ${a[1]}`);
      if (stack.length === 0) roots++;
      if (!m[3]) stack.push(m[1]);
    }
    i = gt + 1;
  }
  assert.equal(stack.length, 0, `unclosed: ${stack.join(', ')}`);
  assert.equal(roots, 1, 'one root element');
}

const attr = (tag: string, name: string): string | undefined => new RegExp(`\\s${name}="([^"]*)"`).exec(tag)?.[1];
const texts = (svg: string, cls: string): { x: number; text: string }[] =>
  [...svg.matchAll(new RegExp(`<text class="${cls}"([^>]*)>([^<]*)</text>`, 'g'))].map((m) => ({ x: Number(attr(m[1], 'x')), text: m[2] }));
const viewBox = (svg: string): number[] => attr(/<svg[^>]*>/.exec(svg)![0], 'viewBox')!.split(' ').map(Number);

/** A training run whose loss falls from about 4.2 to 1.7; periodic evals every 20 steps and a final one at the end. */
function run(steps = 200): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (let s = 10; s <= steps; s += 10) {
    out.push({ step: s, loss: 1.7 + 2.5 * Math.exp(-(s - 10) / 50) + 0.02 * Math.sin(s) });
    if (s % 20 === 0) out.push({ step: s, val_loss: 1.73 + 2.4 * Math.exp(-s / 50) });
  }
  out.push({ step: steps, val_loss: 1.76, final: true });
  return out;
}

test('linear axes use nice steps, cover the data with 5 to 8 ticks, and label with just enough decimals', () => {
  const nice = (step: number): boolean => {
    const k = Math.floor(Math.log10(step) + 1e-9), m = step / 10 ** k;
    return [1, 2, 2.5, 5].some((n) => Math.abs(m - n) < 1e-9);
  };
  const cases: [number, number][] = [[1.7, 4.2], [1.73, 4.21], [0.012, 0.048], [2.9, 3.1], [100, 12345], [-3, 7], [3.14159, 3.14161], [0, 1]];
  for (const [lo, hi] of cases) {
    const a = linearAxis(lo, hi);
    assert.ok(a.ticks.length >= 4 && a.ticks.length <= 8, `${lo}..${hi}: ${a.labels.join(' ')}`);
    assert.ok(a.ticks[0] <= lo && a.ticks.at(-1)! >= hi, `${lo}..${hi} not covered by ${a.labels.join(' ')}`);
    const step = a.ticks[1] - a.ticks[0];
    assert.ok(nice(step), `${lo}..${hi}: step ${step}`);
    a.ticks.forEach((t, i) => {
      assert.equal(Number(a.labels[i]), t);
      if (i) assert.ok(Math.abs(t - a.ticks[i - 1] - step) < step * 1e-9, `uneven ticks ${a.labels.join(' ')}`);
    });
    // Same number of decimals on every label, and no trailing zero that every label shares.
    const decimals = a.labels.map((l) => (l.split('.')[1] ?? '').length);
    assert.equal(new Set(decimals).size, 1, a.labels.join(' '));
    if (decimals[0] > 0) assert.ok(a.labels.some((l) => !l.endsWith('0')), `needless decimals: ${a.labels.join(' ')}`);
  }
  assert.deepEqual(linearAxis(1.7, 4.2).labels, ['1.5', '2.0', '2.5', '3.0', '3.5', '4.0', '4.5']);
  assert.deepEqual(linearAxis(2.9, 3.1).labels, ['2.90', '2.95', '3.00', '3.05', '3.10']);
});

test('step axes tick whole steps only; log axes tick decades labelled like 1e-4', () => {
  for (const [lo, hi] of [[0, 1], [1, 3], [1, 7], [10, 200], [0, 25], [5, 11], [1000, 250000], [7, 7]]) {
    const a = linearAxis(lo, hi, { integer: true });
    for (const t of a.ticks) assert.ok(Number.isInteger(t), `${lo}..${hi}: ${a.labels.join(' ')}`);
    for (const l of a.labels) assert.match(l, /^-?\d+$/);
    assert.ok(a.ticks[0] <= lo && a.ticks.at(-1)! >= hi);
    assert.ok(a.ticks.length <= 8);
  }
  const lr = logAxis(1e-6, 1);
  assert.deepEqual(lr.labels, ['1e-6', '1e-5', '1e-4', '1e-3', '1e-2', '1e-1', '1e0']);
  assert.deepEqual(logAxis(2e-4, 8e-4).labels, ['1e-4', '1e-3']);
  assert.ok(logAxis(1e-12, 1e3).labels.length <= 8);

  const svg = renderLineChart([{ label: 'loss', color: '#000', points: [[1e-6, 4], [1e-4, 3.5], [0.3, 5]] }], { logX: true });
  assert.deepEqual(texts(svg, 'xtick').map((t) => t.text), ['1e-6', '1e-5', '1e-4', '1e-3', '1e-2', '1e-1', '1e0']);
  assertWellFormed(svg);
});

test('a loss plot marks nice y values covering the loss and whole steps on x', () => {
  const svg = renderLossPlot([{ name: 'run', records: run() }]);
  const y = texts(svg, 'ytick').map((t) => Number(t.text));
  const losses = run().flatMap((r) => [r.loss, r.val_loss]).filter((v): v is number => typeof v === 'number');
  assert.ok(Math.max(...losses) > 4.1 && Math.min(...losses) < 1.8);
  assert.ok(y.length >= 5 && y.length <= 8, `y ticks ${y}`);
  assert.ok(y[0] <= Math.min(...losses) && y.at(-1)! >= Math.max(...losses), `y ticks ${y}`);
  const x = texts(svg, 'xtick').map((t) => t.text);
  assert.ok(x.length >= 4 && x.length <= 8, `x ticks ${x}`);
  for (const t of x) assert.match(t, /^\d+$/);
  // Even a short run: no 2.5-step ticks.
  const short = renderLossPlot([{ name: 'short', records: [{ step: 1, loss: 3 }, { step: 2, loss: 2.9 }, { step: 3, loss: 2.7, val_loss: 2.8 }] }]);
  for (const t of texts(short, 'xtick')) assert.match(t.text, /^\d+$/);
  assertWellFormed(svg);
  assertWellFormed(short);
});

test('train and val are drawn in different styles, each in the legend; the final evaluation is a marker of its own', () => {
  const svg = renderLossPlot([{ name: 'run', records: run() }]);
  const train = /<path class="train"[^>]*>/.exec(svg)?.[0];
  const val = /<path class="val"[^>]*>/.exec(svg)?.[0];
  assert.ok(train && val, 'a train path and a val path');
  const style = (tag: string): string => ['stroke-dasharray', 'stroke-width'].map((a) => attr(tag, a) ?? '').join('|');
  assert.notEqual(style(train), style(val));
  assert.equal(attr(train, 'stroke'), attr(val, 'stroke'), 'one colour per run');
  const legend = [...svg.matchAll(/<g class="legend-item (\w+)">[\s\S]*?<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[2]);
  assert.deepEqual(legend, ['train', 'val', 'final val']);
  // The val line ends at the last periodic evaluation; the final one is a separate marker, not a vertical jump.
  const valPoints = attr(val, 'd')!.split(/[ML]/).filter(Boolean);
  assert.equal(valPoints.length, 10);
  assert.equal(new Set(valPoints.map((p) => p.split(',')[0])).size, valPoints.length, 'one val point per step');
  assert.match(svg, /<g class="final">\s*<path [^>]*fill="white"/);
});

test('several runs: one colour per run, the train/val styles shared, a style key in the legend', () => {
  const svg = renderLossPlot([{ name: 'a', records: run() }, { name: 'b', records: run(100) }]);
  const paths = [...svg.matchAll(/<path class="(train|val)"[^>]*>/g)].map((m) => ({ kind: m[1], stroke: attr(m[0], 'stroke'), dash: attr(m[0], 'stroke-dasharray') }));
  assert.equal(paths.length, 4);
  const strokes = (k: string): string[] => paths.filter((p) => p.kind === k).map((p) => p.stroke!);
  assert.deepEqual(strokes('train'), strokes('val'));
  assert.notEqual(strokes('train')[0], strokes('train')[1]);
  assert.ok(paths.every((p) => (p.kind === 'val') === Boolean(p.dash)));
  const legend = [...svg.matchAll(/<g class="legend-item[^"]*">[\s\S]*?<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(legend, ['a', 'b', 'train', 'val', 'final val']);
  assertWellFormed(svg);
});

test('a long run name stays inside the picture, shortened in the middle', () => {
  const long = 'lr-sweep-d256-h8-l6-ctx512-batch64-warmup100-cosine-' + 'x'.repeat(150) + '-seed1234';
  const svg = renderLossPlot([{ name: 'baseline', records: run() }, { name: long, records: run() }, { name: 'another-run', records: run() }]);
  const [, , W] = viewBox(svg);
  const items = [...svg.matchAll(/<g class="legend-item[^"]*">[\s\S]*?<text([^>]*)>(?:<title>([^<]*)<\/title>)?([^<]*)<\/text>/g)];
  assert.ok(items.length >= 4);
  for (const [, attrs, , text] of items) {
    const x = Number(attr(attrs, 'x'));
    assert.ok(x >= 0, text);
    // Whatever our own estimate, a crude 0.62em a character (font-size 12) must fit too.
    for (const width of [estimateTextWidth(text), text.length * 0.62 * 12]) assert.ok(x + width <= W, `"${text}" at ${x} is ${width}px wide in a ${W}px picture`);
  }
  const shortened = items.find((m) => m[2] === long);
  assert.ok(shortened, 'the full name stays in a <title>');
  assert.match(shortened[3], /^lr-sweep-d256.*\u2026.*-seed1234$/);
  // The title, too, fits.
  const one = renderLossPlot([{ name: long, records: run() }]);
  const title = /<text class="title"[^>]*>(?:<title>[^<]*<\/title>)?([^<]*)<\/text>/.exec(one)![1];
  assert.ok(estimateTextWidth(title, 15) <= viewBox(one)[2]);
  assert.match(title, /\u2026/);
  assertWellFormed(one);
});

test('middleEllipsis keeps both ends and never splits a character', () => {
  assert.equal(middleEllipsis('short', 500), 'short');
  const s = middleEllipsis('abcdefghijklmnopqrstuvwxyz', 80);
  assert.match(s, /^abc.*\u2026.*xyz$/);
  assert.ok(estimateTextWidth(s) <= 80);
  const emoji = middleEllipsis('\u{1F600}'.repeat(30), 60);
  assert.ok(!/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(emoji), 'no lone surrogate');
});

test('run names with markup characters are escaped, and the output is well-formed and deterministic', () => {
  const name = 'a<b>&c"d\'e \u0001 \u00e9\u4e2d';
  const svg = renderLossPlot([{ name, records: run() }, { name: '</svg><script>x</script>', records: run(50) }], { title: `cmp ${name}` });
  assert.ok(!svg.includes('<script'), 'no injected element');
  assert.ok(!svg.includes('a<b>'));
  assert.match(svg, /a&#60;b&#62;&#38;c&#34;d&#39;e/);
  assertWellFormed(svg);
  assert.equal(svg, renderLossPlot([{ name, records: run() }, { name: '</svg><script>x</script>', records: run(50) }], { title: `cmp ${name}` }));
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(!/href=|<script|@import|url\(/.test(svg), 'self-contained');
});

test('unset title gets the default; empty runs, resumed runs and odd values still plot', () => {
  assert.match(renderLossPlot([{ name: 'r', records: run() }], { title: undefined }), /<text class="title"[^>]*>loss: r<\/text>/);
  const empty = renderLossPlot([{ name: 'nothing', records: [] }]);
  assertWellFormed(empty);
  assert.ok(!empty.includes('NaN') && !empty.includes('Infinity'));
  // A resumed run logs the steps after its checkpoint again: one point per step, in step order.
  const resumed: MetricRecord[] = [...run(100), { step: 90, loss: 2 }, { step: 100, loss: 1.9 }, { step: 110, loss: 1.8 }];
  const svg = renderLossPlot([{ name: 'r', records: resumed }]);
  const xs = attr(/<path class="train"[^>]*>/.exec(svg)![0], 'd')!.split(/[ML]/).filter(Boolean).map((p) => Number(p.split(',')[0]));
  assert.deepEqual(xs, [...xs].sort((a, b) => a - b));
  assert.equal(new Set(xs).size, xs.length);
  const flat = renderLossPlot([{ name: 'flat', records: [{ step: 5, loss: 2 }, { step: 5, val_loss: 2, final: true }, { step: 6, loss: Number.NaN }] }]);
  assertWellFormed(flat);
  assert.ok(!flat.includes('NaN') && !flat.includes('Infinity'));
});

test('xMax carries the x axis past the last point; a narrow chart gets fewer x ticks, none overlapping', () => {
  const points: [number, number][] = [[1, 4], [2, 3.5], [3, 3.2]];
  const ticksOf = (svg: string): number[] => texts(svg, 'xtick').map((t) => Number(t.text));
  const reaching = renderLineChart([{ label: 'train', color: '#000', points }], { xMax: 20 });
  assert.ok(ticksOf(reaching).at(-1)! >= 20, `x ticks ${ticksOf(reaching)}`);
  for (const t of texts(reaching, 'xtick')) assert.match(t.text, /^\d+$/);
  // An xMax below the points changes nothing.
  assert.equal(renderLineChart([{ label: 'train', color: '#000', points }], { xMax: 2 }), renderLineChart([{ label: 'train', color: '#000', points }]));
  // Only an xMax: the axis still covers it.
  assert.ok(ticksOf(renderLineChart([], { xMax: 7 })).at(-1)! >= 7);

  const long: [number, number][] = [[1, 4], [70000, 2]];
  for (const width of [300, 343, 760]) {
    const svg = renderLineChart([{ label: 'train', color: '#000', points: long }], { width });
    const xt = texts(svg, 'xtick');
    assert.ok(xt.length >= 2, `${width}: x ticks ${xt.map((t) => t.text)}`);
    xt.forEach((t, i) => {
      if (i) assert.ok(t.x - xt[i - 1].x >= (estimateTextWidth(t.text) + estimateTextWidth(xt[i - 1].text)) / 2, `${width} px: labels ${xt[i - 1].text} and ${t.text} overlap`);
    });
    assert.equal(viewBox(svg)[2], width);
    assertWellFormed(svg);
  }
  // A line of a single point with dots: the dot is drawn.
  assert.match(renderLineChart([{ label: 'train', color: '#000', points: [[1, 3]], dots: true }]), /<circle /);
});

test('a run of one logged step draws a dot, not an empty path; losses past a million label as 8e29, not 8.0000000000000001e+29', () => {
  const one = renderLossPlot([{ name: 'r', records: [{ step: 1, loss: 3.2 }] }]);
  assert.match(one, /<g class="train" fill="[^"]+">\s*<circle /);
  assertWellFormed(one);
  const huge = renderLossPlot([{ name: 'r', records: [{ step: 1, loss: 4 }, { step: 2, loss: 3e29 }, { step: 3, loss: 8e29 }] }]);
  const labels = [...huge.matchAll(/<text class="ytick"[^>]*>([^<]*)</g)].map((m) => m[1]);
  assert.ok(labels.length >= 3 && labels.every((l) => /^(0|-?\d(\.\d+)?e\d+)$/.test(l)), labels.join(' '));
  // Ticks a small step apart at that size still read apart.
  assert.deepEqual(linearAxis(1_000_000, 1_000_500).labels, ['1e6', '1.0001e6', '1.0002e6', '1.0003e6', '1.0004e6', '1.0005e6']);
  assert.deepEqual(linearAxis(1_000_000, 1_100_000).labels, ['1e6', '1.02e6', '1.04e6', '1.06e6', '1.08e6', '1.1e6']);
});
