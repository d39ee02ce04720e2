/** Terminal output for training: a redrawn progress line on a TTY, plain lines otherwise. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatRate(tokensPerSecond: number): string {
  return tokensPerSecond >= 1000 ? `${(tokensPerSecond / 1000).toFixed(1)}k` : tokensPerSecond.toFixed(0);
}

export interface ProgressLine {
  update(step: number, total: number, fields: string): void;
  /** Prints a whole line above the bar. */
  print(line: string): void;
  done(): void;
}

export function progressLine(stream: NodeJS.WriteStream = process.stderr, plainEvery = 10): ProgressLine {
  const tty = Boolean(stream.isTTY);
  let shown = false;
  const clear = (): void => {
    if (tty && shown) stream.write('\r\x1b[2K');
    shown = false;
  };
  return {
    update(step, total, fields) {
      if (!tty) {
        if (step % plainEvery === 0 || step === total) stream.write(`step ${step}/${total} ${fields}\n`);
        return;
      }
      const width = 24;
      const filled = Math.round((step / total) * width);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      clear();
      const line = `${bar} ${step}/${total} ${fields}`;
      stream.write(line.slice(0, Math.max(20, (stream.columns ?? 120) - 1)));
      shown = true;
    },
    print(line) {
      clear();
      stream.write(line + '\n');
    },
    done() {
      clear();
    },
  };
}
