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

/** ", 1.234 bits per byte" to follow a loss, or nothing where the tokens stand for no text. */
export function perByte(bitsPerByte: number | null): string {
  return bitsPerByte === null ? '' : `, ${bitsPerByte.toFixed(3)} bits per byte`;
}

export interface ProgressLine {
  update(step: number, total: number, fields: string): void;
  /** Prints a whole line above the bar. */
  print(line: string): void;
  done(): void;
}

/** Below this many columns a reported width is taken as unknown (0 under `script`, say). */
const MIN_COLUMNS = 40;
const DEFAULT_COLUMNS = 120;

/** The terminal's width, or 120 where it reports none or an implausibly narrow one. */
export function terminalWidth(stream: { columns?: number }): number {
  const c = stream.columns;
  return typeof c === 'number' && Number.isFinite(c) && c >= MIN_COLUMNS ? Math.floor(c) : DEFAULT_COLUMNS;
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
      const numbers = `${step}/${total} ${fields}`;
      const room = terminalWidth(stream) - 1;
      // The numbers come first; the bar gets what room is left (up to 24 cells), or none.
      const width = Math.min(24, room - numbers.length - 1);
      const fraction = total > 0 ? Math.min(1, Math.max(0, step / total)) : 0;
      const filled = Math.round(fraction * width);
      const line = width >= 8 ? `${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${numbers}` : numbers.slice(0, room);
      clear();
      stream.write(line);
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
