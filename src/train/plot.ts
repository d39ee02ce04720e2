/**
 * Loss plots as standalone SVG (opens in any browser or image viewer; no dependencies).
 * One colour per run; train loss as a thin line, validation loss as a thick line with dots.
 */
import { readFile } from 'node:fs/promises';
import { MinigptError } from '../errors.js';

export interface MetricRecord {
  step: number;
  loss?: number;
  val_loss?: number;
  lr?: number;
  [key: string]: unknown;
}

export interface PlotSeries {
  name: string;
  records: MetricRecord[];
}

export async function readMetrics(path: string): Promise<MetricRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new MinigptError(`cannot read ${path}; is this a run directory (it should contain metrics.jsonl)?`);
  }
  const out: MetricRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line);
      if (typeof r?.step === 'number') out.push(r);
    } catch {
      // A line cut short by a crash is skipped; every complete line still plots.
    }
  }
  return out;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

const escapeXml = (s: string): string => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Log-scale x axis (the lr finder). */
  logX?: boolean;
  width?: number;
  height?: number;
}

/** Generic line chart: series of (x, y) points, each with a style. */
export function renderLineChart(lines: { label: string; color: string; points: [number, number][]; thick?: boolean; dots?: boolean; dashed?: boolean }[], opts: PlotOptions = {}): string {
  const W = opts.width ?? 760, H = opts.height ?? 440;
  const m = { left: 64, right: 20, top: 40, bottom: 52 };
  const pts = lines.flatMap((l) => l.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const fx = (x: number): number => (opts.logX ? Math.log10(x) : x);
  let [x0, x1] = pts.length ? [Math.min(...pts.map((p) => fx(p[0]))), Math.max(...pts.map((p) => fx(p[0])))] : [0, 1];
  let [y0, y1] = pts.length ? [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))] : [0, 1];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x: number): number => m.left + ((fx(x) - x0) / (x1 - x0)) * (W - m.left - m.right);
  const sy = (y: number): number => H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  if (opts.title) out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(opts.title)}</text>`);
  for (const t of niceTicks(y0, y1, 6)) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end">${t}</text>`);
  }
  const xTicks = opts.logX ? niceTicks(Math.ceil(x0), Math.floor(x1), Math.min(8, Math.floor(x1) - Math.ceil(x0) + 1)).map((e) => Math.pow(10, e)) : niceTicks(x0, x1, 8);
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${m.top}" y2="${H - m.bottom}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x}" y="${H - m.bottom + 16}" text-anchor="middle">${opts.logX ? t.toExponential(0) : t}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="none" stroke="#888"/>`);
  if (opts.xLabel) out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`);
  if (opts.yLabel) out.push(`<text transform="translate(16 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(opts.yLabel)}</text>`);
  lines.forEach((l) => {
    const ok = l.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logX || x > 0));
    if (ok.length === 0) return;
    const d = ok.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    out.push(`<path d="${d}" fill="none" stroke="${l.color}" stroke-width="${l.thick ? 2.5 : 1.2}"${l.dashed ? ' stroke-dasharray="5,3"' : ''} opacity="${l.thick ? 1 : 0.75}"/>`);
    if (l.dots) for (const [x, y] of ok) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${l.color}"/>`);
  });
  lines.forEach((l, i) => {
    const y = m.top + 14 + i * 16;
    out.push(`<line x1="${W - m.right - 190}" x2="${W - m.right - 170}" y1="${y - 4}" y2="${y - 4}" stroke="${l.color}" stroke-width="${l.thick ? 2.5 : 1.2}"${l.dashed ? ' stroke-dasharray="5,3"' : ''}/>`);
    out.push(`<text x="${W - m.right - 164}" y="${y}">${escapeXml(l.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Train and validation loss of one or more runs against the step. */
export function renderLossPlot(runs: PlotSeries[], opts: PlotOptions = {}): string {
  const lines = runs.flatMap((run, i) => {
    const color = COLORS[i % COLORS.length];
    const prefix = runs.length > 1 ? `${run.name} ` : '';
    return [
      { label: `${prefix}train`, color, points: run.records.filter((r) => typeof r.loss === 'number').map((r) => [r.step, r.loss!] as [number, number]) },
      { label: `${prefix}val`, color, thick: true, dots: true, points: run.records.filter((r) => typeof r.val_loss === 'number').map((r) => [r.step, r.val_loss!] as [number, number]) },
    ];
  });
  return renderLineChart(lines, { title: opts.title ?? (runs.length === 1 ? `loss: ${runs[0].name}` : 'loss'), xLabel: 'step', yLabel: 'loss (nats/token)', ...opts });
}
