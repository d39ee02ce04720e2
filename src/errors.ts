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
