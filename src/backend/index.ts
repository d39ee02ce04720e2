/** Backend selection by name. `auto` picks the fastest backend this machine has. */
import { MinigptError } from '../errors.js';
import { createReferenceBackend } from './reference/index.js';
import type { Backend } from './types.js';

export type { Backend, Tensor, IntTensor, AttentionShape, AdamWHyper } from './types.js';
export { createReferenceBackend } from './reference/index.js';

export const BACKEND_NAMES = ['auto', 'reference'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export async function createBackend(name: string = 'auto'): Promise<Backend> {
  switch (name) {
    case 'auto':
    case 'reference':
      return createReferenceBackend();
    default:
      throw new MinigptError(`unknown backend "${name}"; choose one of ${BACKEND_NAMES.join(', ')}`);
  }
}
