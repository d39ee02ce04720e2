/**
 * An error the user can cause and fix (bad flag, missing file, corrupt checkpoint...).
 * Its message is written for them: what is wrong and what to do. The CLI prints it as one
 * line and exits non-zero; anything else that is thrown is a bug and keeps its stack.
 */
export class MinigptError extends Error {
  override name = 'MinigptError';
}

/** Throws a MinigptError when `cond` is false. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new MinigptError(typeof message === 'function' ? message() : message);
}

/**
 * The name in `names` that an unknown `key` most likely meant, for a "did you mean" in its error:
 * the same letters ignoring case, '-' and '_' (dModel, d-model for d_model), or with `prefixes`
 * also one that starts the other (step for steps, batchSize for batch), else one a typo away (a
 * letter left out, added, changed, or two swapped: stpes, overwite; two for names of 8 letters or
 * more). Undefined when none is.
 */
export function likelyName(key: string, names: readonly string[], opts: { prefixes?: boolean } = {}): string | undefined {
  const squash = (k: string): string => k.toLowerCase().replace(/[-_]/g, '');
  const k = squash(key);
  const near = names.find((n) => squash(n) === k) ?? (opts.prefixes === true ? names.find((n) => squash(n).startsWith(k) || k.startsWith(squash(n))) : undefined);
  if (near !== undefined || k.length < 3) return near;
  let best: string | undefined, bestDistance = k.length >= 8 ? 3 : 2;
  for (const n of names) {
    const d = typoDistance(k, squash(n));
    if (d < bestDistance) { best = n; bestDistance = d; }
  }
  return best;
}

/** Edits (insert, delete, change a letter, swap two neighbours) between a and b: the optimal string alignment distance. */
function typoDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** A value as an error message shows it: numbers as written (NaN, Infinity, 1e400 as Infinity), strings quoted, objects as JSON. */
export function shownValue(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  if (typeof v === 'function') return 'a function';
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Checks a library call's options object, as the CLI checks its flags: absent, or an object whose
 * keys are all in `names`; a misspelt key is a MinigptError ("unknown `what` option ... did you
 * mean ...?"), not an option quietly left at its default.
 */
export function checkOptionNames(opts: unknown, names: readonly string[], what: string): void {
  if (opts === undefined) return;
  check(typeof opts === 'object' && opts !== null && !Array.isArray(opts), () => `${what} options must be an object (got ${shownValue(opts)})`);
  for (const key of Object.keys(opts)) {
    if (names.includes(key)) continue;
    const near = likelyName(key, names, { prefixes: true });
    throw new MinigptError(`unknown ${what} option "${key}"${near ? ` (did you mean "${near}"?)` : ''}`);
  }
}

/** Checks that a `signal` option, when given, is an AbortSignal (anything with a boolean `aborted`). */
export function checkAbortSignal(signal: unknown): void {
  check(signal === undefined || (typeof signal === 'object' && signal !== null && typeof (signal as { aborted?: unknown }).aborted === 'boolean'),
    () => `signal must be an AbortSignal (got ${shownValue(signal)})`);
}

/** Checks that `value`, when given, is a whole number of at least `min`; the message names it `name`. */
export function checkWhole(value: unknown, name: string, min: number): void {
  check(value === undefined || (Number.isSafeInteger(value) && (value as number) >= min), () => `${name} must be a whole number, ${min} or more (got ${shownValue(value)})`);
}

/**
 * How messages name the options a user gives: as the CLI's flags (`--context`, `--init-from`),
 * which `minigpt` sets as it starts, or as library calls take them (`model.context`, `initFrom`),
 * the default. Messages are written once; optionName and optionSetting word them for the caller.
 */
let namingFlags = false;

/** Messages from here on name options as the CLI's flags (the CLI calls this at its start). */
export function nameOptionsAsFlags(): void {
  namingFlags = true;
}

/**
 * An option as messages name it: the library's `name` (`model.context`, `initFrom`), or for the
 * CLI `flag`, by default the kebab-case flag of its last part (`--context`, `--init-from`).
 */
export function optionName(name: string, flag?: string): string {
  if (!namingFlags) return name;
  return flag ?? `--${name.split('.').at(-1)!.replace(/_/g, '-').replace(/[A-Z]/g, (ch) => `-${ch.toLowerCase()}`)}`;
}

/**
 * An option set to a value, as advice words it: `--invalid-utf8 replace`, `--all` for the CLI;
 * `invalidUtf8: "replace"`, `all: true` for a library call (strings quoted, numbers and true not).
 */
export function optionSetting(name: string, value: string | number | true, flag?: string): string {
  if (namingFlags) return value === true ? optionName(name, flag) : `${optionName(name, flag)} ${value}`;
  return `${name}: ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`;
}

/** Advice naming what to run: `cli` (a minigpt command) for the CLI, `library` (a call) for a library caller. */
export function adviceFor(cli: string, library: string): string {
  return namingFlags ? cli : library;
}

/** "flag" for the CLI, "option" for a library call (plural with `many`). */
export function optionWord(many = false): string {
  return `${namingFlags ? 'flag' : 'option'}${many ? 's' : ''}`;
}
