export interface Percentiles {
  p50_ms: number;
  p90_ms: number;
  n: number;
}

/** A summary with where its clock starts and stops. */
export interface Result extends Percentiles {
  interval: string;
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

/** Samples must be numbers of milliseconds, as many as asked for: anything else is the sampler's error. */
export function checkSamples(name: string, samples: unknown, n: number): number[] {
  if (!Array.isArray(samples)) throw new Error(`${name}: the sampler returned no samples`);
  if (samples.length !== n) throw new Error(`${name}: the sampler returned ${samples.length} samples, not ${n}`);
  samples.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`${name}: sample ${i} is ${String(v)}, not a time`);
  });
  return samples as number[];
}
