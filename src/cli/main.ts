#!/usr/bin/env node
/** The minigpt command line: parses, calls the library, prints. Nothing else lives here. */
import { readFileSync } from 'node:fs';
import { MinigptError, nameOptionsAsFlags } from '../errors.js';
import { installOutputGuards } from './output.js';
import { fsErrorForUser, removeTemporariesNow } from '../util/fs.js';
import { tooLargeForText } from '../data/text.js';
import { formatHelp, parseFlags, type CommandSpec } from './args.js';
import { initCommand } from './commands/init.js';
import { evalCommand } from './commands/eval.js';
import { trainCommand } from './commands/train.js';
import { sampleCommand } from './commands/sample.js';
import { lrFindCommand } from './commands/lr-find.js';
import { plotCommand } from './commands/plot.js';
import { benchCommand } from './commands/bench.js';
import { tokenizerCommand } from './commands/tokenizer.js';
import { prepareCommand } from './commands/prepare.js';
import { exportCommand } from './commands/export.js';
import { importCommand } from './commands/import.js';
import { webCommand } from './commands/web.js';

const COMMANDS: CommandSpec[] = [trainCommand, sampleCommand, evalCommand, lrFindCommand, plotCommand, tokenizerCommand, prepareCommand, exportCommand, importCommand, webCommand, benchCommand, initCommand];

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    'minigpt: train small LLaMA-style language models in TypeScript.',
    '',
    'Usage: minigpt <command> [flags]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Run `minigpt <command> --help` or `minigpt help <command>` for the flags of each command,',
    'and `minigpt --version` for the version.',
  ].join('\n');
}

/** The version in package.json, found from this file (dist/src/cli/main.js or src/cli/main.ts). */
function version(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'minigpt' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // Not there: try the next place.
    }
  }
  return 'unknown';
}

export async function main(argv: string[]): Promise<number> {
  // The library's messages name options as the flags the user typed.
  nameOptionsAsFlags();
  const debug = argv.includes('--debug');
  const [name, ...rest] = argv;
  try {
    const find = (n: string): CommandSpec => {
      const cmd = COMMANDS.find((c) => c.name === n);
      if (!cmd) throw new MinigptError(`unknown command "${n}"; commands are ${COMMANDS.map((c) => c.name).join(', ')} (see minigpt --help)`);
      return cmd;
    };
    if (name === 'help' && rest.length > 0 && !rest[0]!.startsWith('-')) {
      // `minigpt help train` is `minigpt train --help`.
      console.log(formatHelp(find(rest[0]!)));
      return 0;
    }
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      console.log(mainHelp());
      return 0;
    }
    if (name === '--version' || name === '-v' || name === '-V' || name === 'version') {
      console.log(`minigpt ${version()}`);
      return 0;
    }
    const cmd = find(name);
    const { values, positionals } = parseFlags(rest, cmd.flags, cmd.positionals);
    if (values.help) {
      console.log(formatHelp(cmd));
      return 0;
    }
    const code = await cmd.run(values, positionals);
    return typeof code === 'number' ? code : 0;
  } catch (caught) {
    // A file-system error nothing put into words (a symlink loop in a path...) is still the user's to fix.
    const e = fsErrorForUser(caught) ?? textTooLarge(caught) ?? caught;
    if (e instanceof MinigptError) {
      process.stderr.write(`minigpt: error: ${oneLine(e.message)}\n`);
      if (debug) console.error((caught as Error).stack);
      return 1;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`minigpt: internal error: ${oneLine(msg.split('\n')[0]!)} (this is a bug; rerun with --debug for details)\n`);
    if (debug) console.error(e);
    return 2;
  }
}

/**
 * An error message as one line: a newline or other control character in it (a path that holds
 * one, a line of a file quoted by a parser) is written as an escape (\n, \u0007), so the error
 * stays one line and shows what is really there.
 */
export function oneLine(message: string): string {
  return message.replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/**
 * Ctrl-C (or SIGTERM, or SIGHUP: the terminal closed) in a command without its own handler
 * (export, import, prepare, init...): what it was still writing is deleted, not left as a hidden
 * temporary file, and it says so.
 * train, sample and web handle the signal themselves (they save, or stop one sample).
 */
function quitOnSignal(signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP'): void {
  process.on(signal, () => {
    if (process.listenerCount(signal) > 1) return;
    removeTemporariesNow();
    process.stderr.write('\nminigpt: interrupted; nothing half-written was left\n');
    process.exit(signal === 'SIGINT' ? 130 : signal === 'SIGHUP' ? 129 : 143);
  });
}

installOutputGuards();
quitOnSignal('SIGINT');
quitOnSignal('SIGTERM');
quitOnSignal('SIGHUP');
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});

/** Text too large for one JavaScript string (many files together, past ~512 MiB): what to do instead. */
function textTooLarge(e: unknown): MinigptError | null {
  const tooLong = (e as NodeJS.ErrnoException)?.code === 'ERR_STRING_TOO_LONG' || (e instanceof RangeError && /Invalid string length/.test(e.message));
  return tooLong ? new MinigptError(`the text is ${tooLargeForText()}`) : null;
}
