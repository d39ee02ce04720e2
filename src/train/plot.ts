/**
 * Loss plots as standalone SVG (opens in any browser or image viewer; no dependencies, no external
 * fonts or scripts; the same input always gives the same bytes).
 *
 * One colour per run. Train loss is a thin solid line; periodic validation loss a thicker dashed
 * line with dots; the final evaluation (over the whole validation split) a hollow diamond, so it
 * never makes the validation line jump at the last step. Axes use "nice" tick steps (1, 2, 2.5 or
 * 5 x 10^k, whole numbers only on the step axis, decades on a log axis) with light grid lines. The
 * legend sits above the plot area and wraps; labels too long for a row are shortened in the middle.
 *
 * The browser page draws its chart with renderLineChart too, so this module imports nothing from
 * Node: readMetrics loads node:fs only when called.
 */
import { MinigptError, check, checkOptionNames } from '../errors.js';
import { importLazily, checkNodeOnly } from '../util/runtime.js';

/** One line of metrics.jsonl: a logged train step (loss, lr) or an evaluation (val_loss; `final` marks the last one). */
export interface MetricRecord {
  step: number;
  loss?: number;
  val_loss?: number;
  lr?: number;
  final?: boolean;
  [key: string]: unknown;
}

/** One run to plot: its name in the legend and its metric records. */
export interface PlotSeries {
  name: string;
  records: MetricRecord[];
}

/** Options of readMetrics. */
export interface ReadMetricsOptions {
  /** Called with the 1-based number of each line that is not a JSON record (other than blank). */
  onUnreadableLine?: (lineNumber: number) => void;
}

/**
 * The records of the metrics.jsonl file at `path` (the file, not the run folder), in file order;
 * blank lines, lines that do not parse (cut short by a crash; `onUnreadableLine` hears of them)
 * and lines without a numeric step are skipped. Async: loads node:fs when called. Throws a
 * MinigptError when the file cannot be read.
 */
export async function readMetrics(path: string, options: ReadMetricsOptions = {}): Promise<MetricRecord[]> {
  checkNodeOnly('readMetrics()');
  checkOptionNames(options, ['onUnreadableLine'], 'readMetrics()');
  check(options.onUnreadableLine === undefined || typeof options.onUnreadableLine === 'function', 'readMetrics() onUnreadableLine must be a function');
  const { readFile } = await importLazily<typeof import('node:fs/promises')>('node:fs/promises');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new MinigptError(`cannot read ${path}; is this a run directory (it should contain metrics.jsonl)?`);
  }
  const out: MetricRecord[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try {
      const r = JSON.parse(lines[i]);
      if (typeof r?.step === 'number') out.push(r);
    } catch {
      // A line cut short by a crash is skipped; every complete line still plots.
      options.onUnreadableLine?.(i + 1);
    }
  }
  return out;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
/** Colour of the style key (train / val / final val) when several runs share the plot. */
const KEY_COLOR = '#555';
const FONT = 12;

// ---------------------------------------------------------------- text

/** XML text/attribute escaping; characters XML 1.0 forbids (most C0 controls) become U+FFFD. */
export const escapeXml = (s: string): string =>
  // eslint-disable-next-line no-control-regex
  s.replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '\uFFFD')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A deliberately generous estimate of a label's rendered width in a sans-serif font, in px. */
export function estimateTextWidth(s: string, fontSize = FONT): number {
  let em = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x1100) em += 1.0; // CJK, emoji and other wide glyphs
    else if (/[A-Z@%&mwMW#]/.test(ch)) em += 0.85;
    else if (/[ilj.,:;|!'`\s]/.test(ch)) em += 0.38;
    else em += 0.62;
  }
  return em * fontSize;
}

/** Shortens `s` by replacing its middle with an ellipsis until it fits `maxWidth` px. */
export function middleEllipsis(s: string, maxWidth: number, fontSize = FONT): string {
  if (estimateTextWidth(s, fontSize) <= maxWidth) return s;
  const cps = Array.from(s); // never split a surrogate pair
  for (let keep = cps.length - 1; keep > 0; keep--) {
    const head = Math.ceil(keep / 2), tail = keep - head;
    const t = cps.slice(0, head).join('') + '\u2026' + (tail ? cps.slice(cps.length - tail).join('') : '');
    if (estimateTextWidth(t, fontSize) <= maxWidth) return t;
  }
  return '\u2026';
}

// ---------------------------------------------------------------- axes

export interface Axis {
  /** The axis range: a whole number of ticks, covering the data. */
  lo: number;
  hi: number;
  ticks: number[];
  labels: string[];
  /** Light grid lines without a label (log axes: 2..9 x 10^k). */
  minor?: number[];
}

/**
 * Linear axis with a "nice" step (1, 2, 2.5 or 5 x 10^k) giving at most `maxTicks` ticks (about
 * 5 to 8 for the default), extended to whole steps so the ticks cover [lo, hi]. Labels all carry
 * the same, smallest sufficient number of decimals. `integer` allows only whole-number steps.
 */
export function linearAxis(lo: number, hi: number, o: { integer?: boolean; maxTicks?: number } = {}): Axis {
  const maxTicks = o.maxTicks ?? 8;
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const d = o.integer ? 1 : Math.abs(lo) * 0.1 || 0.5;
    const nonNegative = lo >= 0;
    lo -= d; hi += d;
    if (o.integer && nonNegative) lo = Math.max(0, lo);
  }
  const k0 = Math.floor(Math.log10((hi - lo) / maxTicks)) - 1;
  for (let k = k0; k <= k0 + 4; k++) {
    for (const m of [1, 2, 2.5, 5]) {
      // m * 10^k, computed so that 0.1, 0.25, ... are as exact as doubles allow.
      const step = k < 0 ? m / 10 ** -k : m * 10 ** k;
      if (o.integer && !Number.isInteger(step)) continue;
      const a = Math.floor(lo / step + 1e-9), b = Math.ceil(hi / step - 1e-9);
      if (b - a + 1 > maxTicks) continue;
      const decimals = Math.min(20, Math.max(0, -k + (m === 2.5 ? 1 : 0)));
      const ticks: number[] = [], labels: string[] = [];
      for (let i = a; i <= b; i++) {
        const v = k < 0 ? (i * m) / 10 ** -k : i * m * 10 ** k;
        const label = v.toFixed(decimals);
        ticks.push(Number(label));
        labels.push(/^-0(\.0*)?$/.test(label) ? label.slice(1) : label);
      }
      // Past a million (a diverged run's losses) fixed decimals read 8.0000000000000001e+29: 8e29.
      // Enough significant digits to tell ticks a step apart (1.0001e6 next to 1.0002e6).
      const biggest = Math.max(Math.abs(ticks[0]), Math.abs(ticks[ticks.length - 1]));
      const digits = Math.min(21, Math.max(1, Math.floor(Math.log10(biggest)) - Math.floor(Math.log10(step)) + (m === 2.5 ? 2 : 1)));
      const exp = (t: number): string => (t === 0 ? '0' : Number(t.toPrecision(digits)).toExponential().replace('e+', 'e'));
      return { lo: ticks[0], hi: ticks[ticks.length - 1], ticks, labels: biggest >= 1e6 ? ticks.map(exp) : labels };
    }
  }
  return { lo, hi, ticks: [lo, hi], labels: [String(lo), String(hi)] }; // not reached for finite input
}

/** Log axis in whole decades covering [lo, hi] (both > 0), labelled 1e-4, 1e-3, ...; values are exponents. */
export function logAxis(lo: number, hi: number, maxLabels = 8): Axis {
  if (!(lo > 0) || !Number.isFinite(lo)) lo = hi > 0 && Number.isFinite(hi) ? hi / 10 : 1e-4;
  if (!(hi > 0) || !Number.isFinite(hi)) hi = lo * 10;
  let a = Math.floor(Math.log10(lo) + 1e-9), b = Math.ceil(Math.log10(hi) - 1e-9);
  if (b <= a) b = a + 1;
  const every = Math.ceil((b - a) / (maxLabels - 1)) || 1;
  const ticks: number[] = [], labels: string[] = [], minor: number[] = [];
  for (let e = a; e <= b; e++) {
    if (e % every !== 0 && e !== a) { minor.push(e); continue; }
    ticks.push(e);
    labels.push(`1e${e}`);
  }
  if (b - a <= 4) for (let e = a; e < b; e++) for (let m = 2; m <= 9; m++) minor.push(e + Math.log10(m));
  return { lo: a, hi: b, ticks, labels, minor };
}

// ---------------------------------------------------------------- chart

export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Log-scale x axis (the lr finder). */
  logX?: boolean;
  /** The x axis reaches at least this far, past the last point if need be (the steps run so far). */
  xMax?: number;
  width?: number;
  height?: number;
}

export interface ChartLine {
  label: string;
  color: string;
  points: [number, number][];
  thick?: boolean;
  /** A dot at every point (left out when there are too many to tell apart). */
  dots?: boolean;
  dashed?: boolean;
  /** Markers only, no line: a hollow diamond at every point. */
  markers?: 'diamond';
  /** Left out of the legend (renderLossPlot writes its own). */
  noLegend?: boolean;
  /** Class on the SVG element(s): train, val, final. */
  kind?: string;
}

export interface LegendEntry {
  label: string;
  color: string;
  /** How the swatch is drawn: like a line, or a filled square (a run's colour). */
  swatch: 'line' | 'square';
  thick?: boolean;
  dashed?: boolean;
  dots?: boolean;
  markers?: 'diamond';
  kind?: string;
  /** Start a new legend row with this entry. */
  newRow?: boolean;
}

const SWATCH = 24, SWATCH_GAP = 5, ITEM_GAP = 16, ROW = 17, MAX_DOTS = 80;
const DASH = '6,3.5';
const f1 = (v: number): string => (Math.round(v * 10) / 10).toFixed(1).replace(/\.0$/, '').replace(/^-0$/, '0');
const lineWidth = (l: { thick?: boolean }): string => (l.thick ? '2.2' : '1.3');
const diamond = (x: number, y: number, r: number, color: string, cls = ''): string =>
  `<path${cls ? ` class="${cls}"` : ''} d="M${f1(x)},${f1(y - r)}L${f1(x + r)},${f1(y)}L${f1(x)},${f1(y + r)}L${f1(x - r)},${f1(y)}Z" fill="white" stroke="${color}" stroke-width="2"/>`;

/** Generic line chart: series of (x, y) points, each with a style. */
export function renderLineChart(lines: ChartLine[], opts: PlotOptions & { legend?: LegendEntry[] } = {}): string {
  const W = opts.width ?? 760;
  let H = opts.height ?? 440;
  const logX = Boolean(opts.logX);
  const usable = (p: [number, number]): boolean => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logX || p[0] > 0);
  const shown = lines.map((l) => ({ ...l, points: l.points.filter(usable) }));
  const pts = shown.flatMap((l) => l.points);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const min = (v: number[]): number => v.reduce((a, b) => (b < a ? b : a), Infinity);
  const max = (v: number[]): number => v.reduce((a, b) => (b > a ? b : a), -Infinity);

  const yAxis = pts.length ? linearAxis(min(ys), max(ys)) : linearAxis(0, 1);
  // The x range: the points', reaching on to opts.xMax.
  const xMax = opts.xMax !== undefined && Number.isFinite(opts.xMax) && (!logX || opts.xMax > 0) ? opts.xMax : undefined;
  const xLo = xs.length ? min(xs) : xMax ?? (logX ? NaN : 0);
  const xHi = xs.length ? Math.max(max(xs), xMax ?? -Infinity) : xMax ?? (logX ? NaN : 1);
  const integerX = xs.every(Number.isInteger) && (xMax === undefined || Number.isInteger(xMax));
  const xAxisWith = (maxTicks: number): Axis => (logX ? logAxis(xLo, xHi, maxTicks) : linearAxis(xLo, xHi, { integer: integerX, maxTicks }));

  // Margins sized to what they hold.
  const yLabelW = max(yAxis.labels.map((s) => estimateTextWidth(s)));
  const left = Math.ceil(Math.max(56, 34 + yLabelW));
  const rightFor = (a: Axis): number => Math.ceil(Math.max(20, estimateTextWidth(a.labels[a.labels.length - 1] ?? '') / 2 + 8));
  // Fewer x ticks where their labels would run into each other (a narrow chart).
  const crowded = (a: Axis): boolean => {
    const pxPerUnit = (W - left - rightFor(a)) / (a.hi - a.lo);
    return a.ticks.some((t, i) => i > 0 && (t - a.ticks[i - 1]) * pxPerUnit < (estimateTextWidth(a.labels[i - 1]) + estimateTextWidth(a.labels[i])) / 2);
  };
  let xAxis = xAxisWith(8);
  for (let maxTicks = 7; maxTicks >= 2 && crowded(xAxis); maxTicks--) xAxis = xAxisWith(maxTicks);
  const m = { left, right: rightFor(xAxis), top: 0, bottom: 52 };
  const plotW = W - m.left - m.right;

  // Legend: above the plot area, wrapping into rows as wide as the plot.
  const legend: LegendEntry[] = opts.legend ?? shown.filter((l) => !l.noLegend).map((l) => ({
    label: l.label, color: l.color, swatch: 'line', thick: l.thick, dashed: l.dashed, dots: l.dots, markers: l.markers, kind: l.kind,
  }));
  const maxText = plotW - SWATCH - SWATCH_GAP;
  const items = legend.map((e) => {
    const text = middleEllipsis(e.label, maxText);
    return { ...e, text, width: SWATCH + SWATCH_GAP + estimateTextWidth(text) };
  });
  const rows: (typeof items)[] = [];
  let used = Infinity;
  for (const it of items) {
    if (it.newRow || used + ITEM_GAP + it.width > plotW) { rows.push([]); used = -ITEM_GAP; }
    rows[rows.length - 1].push(it);
    used += ITEM_GAP + it.width;
  }
  const legendTop = opts.title ? 36 : 10;
  m.top = Math.max(40, legendTop + rows.length * ROW + 10);
  H = Math.max(H, m.top + 200 + m.bottom); // keep a usable plot area whatever the legend needs
  const plotH = H - m.top - m.bottom;

  const sx = (x: number): number => m.left + (((logX ? Math.log10(x) : x) - xAxis.lo) / (xAxis.hi - xAxis.lo)) * plotW;
  const sxa = (v: number): number => m.left + ((v - xAxis.lo) / (xAxis.hi - xAxis.lo)) * plotW; // axis units
  const sy = (y: number): number => H - m.bottom - ((y - yAxis.lo) / (yAxis.hi - yAxis.lo)) * plotH;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" data-minigpt="plot" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="${FONT}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  if (opts.title) {
    const t = middleEllipsis(opts.title, W - 20, 15);
    out.push(`<text class="title" x="${W / 2}" y="22" text-anchor="middle" font-size="15">${t !== opts.title ? `<title>${escapeXml(opts.title)}</title>` : ''}${escapeXml(t)}</text>`);
  }

  // Grid and ticks.
  out.push('<g class="grid" fill="none">');
  for (const v of xAxis.minor ?? []) out.push(`<line x1="${f1(sxa(v))}" x2="${f1(sxa(v))}" y1="${m.top}" y2="${H - m.bottom}" stroke="#f3f3f3"/>`);
  for (const t of yAxis.ticks) out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${f1(sy(t))}" y2="${f1(sy(t))}" stroke="#e6e6e6"/>`);
  for (const t of xAxis.ticks) out.push(`<line x1="${f1(sxa(t))}" x2="${f1(sxa(t))}" y1="${m.top}" y2="${H - m.bottom}" stroke="#ececec"/>`);
  out.push('</g>');
  out.push('<g class="y-ticks" text-anchor="end" fill="#333">');
  yAxis.ticks.forEach((t, i) => out.push(`<text class="ytick" x="${m.left - 6}" y="${f1(sy(t) + 4)}">${yAxis.labels[i]}</text>`));
  out.push('</g>');
  out.push('<g class="x-ticks" text-anchor="middle" fill="#333">');
  xAxis.ticks.forEach((t, i) => out.push(`<text class="xtick" x="${f1(sxa(t))}" y="${H - m.bottom + 16}">${xAxis.labels[i]}</text>`));
  out.push('</g>');
  out.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  if (opts.xLabel) out.push(`<text x="${f1(m.left + plotW / 2)}" y="${H - 12}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`);
  if (opts.yLabel) out.push(`<text transform="translate(16 ${f1(m.top + plotH / 2)}) rotate(-90)" text-anchor="middle">${escapeXml(opts.yLabel)}</text>`);

  // Series, in the order given (later ones on top).
  for (const l of shown) {
    if (l.points.length === 0) continue;
    const cls = l.kind ? ` class="${escapeXml(l.kind)}"` : '';
    if (l.markers === 'diamond') {
      out.push(`<g${cls}>`);
      for (const [x, y] of l.points) out.push(diamond(sx(x), sy(y), 5.5, l.color));
      out.push('</g>');
      continue;
    }
    const d = l.points.map(([x, y], i) => `${i ? 'L' : 'M'}${f1(sx(x))},${f1(sy(y))}`).join('');
    out.push(`<path${cls} d="${d}" fill="none" stroke="${l.color}" stroke-width="${lineWidth(l)}"${l.dashed ? ` stroke-dasharray="${DASH}"` : ''} stroke-linejoin="round" opacity="${l.thick ? 1 : 0.7}"/>`);
    // A path of one point draws nothing: a run of one logged step shows as a dot.
    if ((l.dots && l.points.length <= MAX_DOTS) || l.points.length === 1) {
      out.push(`<g${cls} fill="${l.color}">`);
      for (const [x, y] of l.points) out.push(`<circle cx="${f1(sx(x))}" cy="${f1(sy(y))}" r="2.8"/>`);
      out.push('</g>');
    }
  }

  // Legend.
  out.push('<g class="legend">');
  rows.forEach((row, r) => {
    let x = m.left;
    const y = legendTop + 12 + r * ROW;
    for (const it of row) {
      const cls = it.kind ? ` class="legend-item ${escapeXml(it.kind)}"` : ' class="legend-item"';
      out.push(`<g${cls}>`);
      const mid = y - 4;
      if (it.swatch === 'square') {
        out.push(`<rect x="${f1(x + 6)}" y="${f1(mid - 5)}" width="12" height="10" fill="${it.color}"/>`);
      } else if (it.markers === 'diamond') {
        out.push(diamond(x + SWATCH / 2, mid, 5, it.color));
      } else {
        out.push(`<line x1="${f1(x)}" x2="${f1(x + SWATCH)}" y1="${f1(mid)}" y2="${f1(mid)}" stroke="${it.color}" stroke-width="${lineWidth(it)}"${it.dashed ? ` stroke-dasharray="${DASH}"` : ''}/>`);
        if (it.dots) out.push(`<circle cx="${f1(x + SWATCH / 2)}" cy="${f1(mid)}" r="2.8" fill="${it.color}"/>`);
      }
      out.push(`<text x="${f1(x + SWATCH + SWATCH_GAP)}" y="${y}">${it.text !== it.label ? `<title>${escapeXml(it.label)}</title>` : ''}${escapeXml(it.text)}</text>`);
      out.push('</g>');
      x += it.width + ITEM_GAP;
    }
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** One point per step, the last record for a step winning (a resumed run logs again from its checkpoint). */
function byStep(records: MetricRecord[], value: (r: MetricRecord) => number | undefined): [number, number][] {
  const at = new Map<number, number>();
  for (const r of records) {
    const v = value(r);
    if (typeof v === 'number' && Number.isFinite(v) && Number.isFinite(r.step)) at.set(r.step, v);
  }
  return [...at.entries()].sort((a, b) => a[0] - b[0]);
}

/** Train and validation loss of one or more runs against the step. */
export function renderLossPlot(runs: PlotSeries[], opts: PlotOptions = {}): string {
  const several = runs.length > 1;
  const lines: ChartLine[][] = [[], [], []]; // train lines under val lines under final markers
  const has = { train: false, val: false, final: false };
  runs.forEach((run, i) => {
    const color = COLORS[i % COLORS.length];
    const train = byStep(run.records, (r) => (r.skipped === true ? undefined : r.loss));
    const val = byStep(run.records, (r) => (r.final === true ? undefined : r.val_loss));
    const final = byStep(run.records, (r) => (r.final === true ? r.val_loss : undefined));
    has.train ||= train.length > 0; has.val ||= val.length > 0; has.final ||= final.length > 0;
    lines[0].push({ label: 'train', color, kind: 'train', points: train, noLegend: true });
    lines[1].push({ label: 'val', color, kind: 'val', thick: true, dashed: true, dots: true, points: val, noLegend: true });
    lines[2].push({ label: 'final val', color, kind: 'final', markers: 'diamond', points: final, noLegend: true });
  });
  const keyColor = several ? KEY_COLOR : COLORS[0];
  const legend: LegendEntry[] = several ? runs.map((run, i) => ({ label: run.name, color: COLORS[i % COLORS.length], swatch: 'square', kind: 'run' })) : [];
  // With several runs the style key gets a row of its own, after the run colours.
  const key: LegendEntry[] = [];
  if (has.train) key.push({ label: 'train', color: keyColor, swatch: 'line', kind: 'train' });
  if (has.val) key.push({ label: 'val', color: keyColor, swatch: 'line', thick: true, dashed: true, dots: true, kind: 'val' });
  if (has.final) key.push({ label: 'final val', color: keyColor, swatch: 'line', markers: 'diamond', kind: 'final' });
  if (several && key.length) key[0].newRow = true;
  legend.push(...key);
  return renderLineChart(lines.flat(), {
    xLabel: 'step', yLabel: 'loss (nats/token)', ...opts,
    // An explicit `title: undefined` (an unset --title) still gets the default title.
    title: opts.title ?? (runs.length === 1 ? `loss: ${runs[0].name}` : 'loss'), legend,
  });
}
