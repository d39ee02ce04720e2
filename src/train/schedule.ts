/** Learning rate at a step: linear warmup from 0, then cosine decay to minLr at totalSteps. */
export interface LrSchedule {
  lr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
}

/** `step` counts from 1 (the first optimizer step). */
export function learningRate(s: LrSchedule, step: number): number {
  if (step <= s.warmupSteps) return (s.lr * step) / s.warmupSteps;
  if (step >= s.totalSteps) return s.minLr;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  return s.minLr + 0.5 * (s.lr - s.minLr) * (1 + Math.cos(Math.PI * progress));
}
