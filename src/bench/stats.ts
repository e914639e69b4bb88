export interface Percentiles {
  p50_ms: number;
  p90_ms: number;
  n: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(samplesMs: readonly number[]): Percentiles {
  const s = [...samplesMs].sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return { p50_ms: r(percentile(s, 50)), p90_ms: r(percentile(s, 90)), n: s.length };
}

export const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
