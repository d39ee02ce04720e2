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
 * also one that starts the other (step for steps, batchSize for batch). Undefined when none does.
 */
export function likelyName(key: string, names: readonly string[], opts: { prefixes?: boolean } = {}): string | undefined {
  const squash = (k: string): string => k.toLowerCase().replace(/[-_]/g, '');
  const k = squash(key);
  return names.find((n) => squash(n) === k || (opts.prefixes === true && (squash(n).startsWith(k) || k.startsWith(squash(n)))));
}
