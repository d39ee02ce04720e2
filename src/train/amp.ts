/**
 * Mixed precision: FP32 master weights; the weights the forward/backward use, the activations
 * and the gradients are rounded to FP16 (or BF16) as they would be stored in that format.
 * Dynamic loss scaling keeps FP16 gradients from underflowing: the loss is multiplied by
 * `scale` (from 2^16); a step whose gradients overflow is skipped and the scale halved; after
 * `growthInterval` clean steps the scale doubles.
 */
export type AmpMode = 'off' | 'fp16' | 'bf16';
export const AMP_MODES: readonly AmpMode[] = ['off', 'fp16', 'bf16'];

export interface AmpState {
  mode: AmpMode;
  /** The half format activations are rounded to, or undefined when off. */
  half: 'f16' | 'bf16' | undefined;
  scale: number;
  cleanSteps: number;
  /** Records whether the last step's gradients were finite, adjusting the scale. */
  update(finite: boolean): void;
}

export const INITIAL_LOSS_SCALE = 65536;
export const SCALE_GROWTH_INTERVAL = 2000;

export function createAmp(mode: AmpMode, prior?: { scale: number; clean_steps: number }, growthInterval = SCALE_GROWTH_INTERVAL): AmpState {
  // BF16 has FP32's exponent range, so it needs no loss scaling.
  const scaled = mode === 'fp16';
  const state: AmpState = {
    mode,
    half: mode === 'fp16' ? 'f16' : mode === 'bf16' ? 'bf16' : undefined,
    scale: scaled ? (prior?.scale ?? INITIAL_LOSS_SCALE) : 1,
    cleanSteps: prior?.clean_steps ?? 0,
    update(finite) {
      if (!scaled) return;
      if (!finite) {
        state.scale /= 2;
        state.cleanSteps = 0;
      } else if (++state.cleanSteps >= growthInterval) {
        state.scale *= 2;
        state.cleanSteps = 0;
      }
    },
  };
  return state;
}
