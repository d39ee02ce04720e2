/** Learning rate at a step: linear warmup from 0, then cosine decay to minLr at totalSteps. */
export interface LrSchedule {
  /** Peak rate, reached at the end of warmup. */
  lr: number;
  /** Rate at the end of the cosine decay (and after it). */
  minLr: number;
  /** Steps of linear warmup. */
  warmupSteps: number;
  /** Step at which the decay reaches minLr. */
  totalSteps: number;
}

/** The learning rate of schedule `s` at `step`; `step` counts from 1 (the first optimizer step). */
export function learningRate(s: LrSchedule, step: number): number {
  if (s.warmupSteps > 0 && step <= s.warmupSteps) return (s.lr * step) / s.warmupSteps;
  if (step >= s.totalSteps) return s.minLr;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  return s.minLr + 0.5 * (s.lr - s.minLr) * (1 + Math.cos(Math.PI * progress));
}
