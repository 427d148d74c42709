// The benchmark harness behind `npm run bench`: every benchmark reports a value next to a raw
// baseline measured in the same run, the ratio between them and the target it must meet.
// Baseline and candidate are measured in alternating rounds so drift hits both alike.
import { performance } from "node:perf_hooks";

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  /** value / baseline for throughput-like results; baseline / value for costs (lower is better). */
  ratio: number;
  /** The ratio the result must reach (ratio >= target). */
  target: number;
  pass: boolean;
  note?: string;
}

export interface Benchmark {
  name: string;
  description: string;
  run(): Promise<BenchResult[]>;
}

export function result(r: Omit<BenchResult, "ratio" | "pass"> & { lowerIsBetter?: boolean }): BenchResult {
  const ratio = r.lowerIsBetter ? r.baseline / r.value : r.value / r.baseline;
  const { lowerIsBetter: _l, ...rest } = r;
  return { ...rest, ratio: Number(ratio.toFixed(3)), pass: ratio >= r.target };
}

/** Runs `fn` repeatedly for about `ms` milliseconds; returns operations per second. */
export function opsPerSecond(fn: () => void, ms: number): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 64; i++) fn();
    n += 64;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

/** Async variant with `concurrency` operations in flight. */
export async function asyncOpsPerSecond(fn: () => Promise<unknown>, ms: number, concurrency = 1): Promise<number> {
  let n = 0;
  const start = performance.now();
  const deadline = start + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await fn();
        n++;
      }
    }),
  );
  return (n * 1000) / (performance.now() - start);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Alternates baseline and candidate `rounds` times and returns the medians of each. */
export async function interleaved(
  rounds: number,
  baseline: () => number | Promise<number>,
  candidate: () => number | Promise<number>,
): Promise<{ baseline: number; value: number }> {
  const b: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < rounds; i++) {
    b.push(await baseline());
    c.push(await candidate());
  }
  return { baseline: median(b), value: median(c) };
}

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  return sortedMs[Math.min(sortedMs.length - 1, Math.ceil((p / 100) * sortedMs.length) - 1)]!;
}

export function formatResult(r: BenchResult): string {
  const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3));
  return `${r.pass ? "PASS" : "FAIL"}  ${r.name.padEnd(44)} ${fmt(r.value).padStart(10)} ${r.unit.padEnd(8)} baseline ${fmt(r.baseline).padStart(10)}  ratio ${r.ratio.toFixed(3)} (target ≥ ${r.target})${r.note ? `  ${r.note}` : ""}`;
}
