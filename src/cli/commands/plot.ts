import { checkOutputFile, exists, isMinigptPlot, standardStream, writeFileAtomic } from '../../util/fs.js';
import { isCheckpointDir } from '../../io/checkpoint.js';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { check } from '../../errors.js';
import type { CommandSpec } from '../args.js';
import { readMetrics, renderLossPlot, type MetricRecord } from '../../train/plot.js';
import { followLatest } from '../../train/train.js';

export const plotCommand: CommandSpec = {
  name: 'plot',
  summary: 'draw the train/val loss of one or more runs into one SVG, to compare them',
  usage: 'minigpt plot RUN [RUN...] [--out FILE] [--title TEXT] [--force]',
  positionals: true,
  flags: {
    out: { type: 'string', value: 'FILE', description: 'SVG to write', default: 'loss-comparison.svg' },
    title: { type: 'string', value: 'TEXT', description: 'chart title', allowEmpty: true },
    force: { type: 'boolean', description: 'replace --out even if it is not a plot minigpt drew (one it drew is replaced anyway)' },
  },
  details: 'RUN is a run directory (runs/latest: the latest run; a run\'s checkpoint folder stands for its run).\n\nExample:\n  minigpt plot runs/run-a runs/run-b --out compare.svg',
  async run(v, runs) {
    check(runs.length > 0, 'name at least one run directory (e.g. minigpt plot runs/run-20261127-120000)');
    await checkOutputFile(v.out as string, { what: 'minigpt plot (SVG)', force: Boolean(v.force), isOurs: isMinigptPlot });
    const series: { name: string; path: string; records: MetricRecord[] }[] = [];
    for (const given of runs) {
      let run = await followLatest(given);
      // A run's checkpoint folder stands for its run, as it does for sample, eval and export.
      if (!(await exists(join(run, 'metrics.jsonl'))) && (await exists(join(run, '..', 'metrics.jsonl'))) && (await isCheckpointDir(run))) run = dirname(resolve(run));
      const unreadable: number[] = [];
      const records = await readMetrics(join(run, 'metrics.jsonl'), { onUnreadableLine: (n) => unreadable.push(n) });
      if (unreadable.length > 0) {
        console.error(`note: skipped ${unreadable.length === 1 ? 'line' : `${unreadable.length} lines, first`} ${unreadable[0]} of ${join(run, 'metrics.jsonl')}: not a JSON record`);
      }
      check(records.some((r) => typeof r.loss === 'number' || typeof r.val_loss === 'number'), () => `${join(run, 'metrics.jsonl')} has no loss records to plot (it is empty, or not a run's metrics)`);
      series.push({ name: basename(resolve(run)), path: resolve(run), records });
    }
    // Runs of one name in different folders (a/run, b/run) are told apart by their paths.
    const clashing = series.filter((s) => series.some((o) => o.name === s.name && o.path !== s.path));
    for (const s of clashing) s.name = relative(process.cwd(), s.path) || s.name;
    await writeFileAtomic(v.out as string, renderLossPlot(series, { title: v.title as string | undefined }));
    // With the picture on stdout (--out /dev/stdout), the report goes to stderr.
    (standardStream(v.out as string) !== undefined ? console.error : console.log)(`wrote ${v.out} (${series.map((s) => `${s.name}: ${pointCounts(s.records)}`).join('; ')})`);
  },
};

/** "12 train losses, 3 val losses": what a run's records put on the plot. */
function pointCounts(records: MetricRecord[]): string {
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 'es'}`;
  const train = records.filter((r) => typeof r.loss === 'number' && r.skipped !== true).length;
  const val = records.filter((r) => typeof r.val_loss === 'number').length;
  return `${count(train, 'train loss')}, ${count(val, 'val loss')}`;
}
