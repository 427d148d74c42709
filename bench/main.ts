// `npm run bench [-- --json] [name…]`: runs the named benchmarks (all by default), prints
// a line per result (or one JSON object per line with --json) and exits non-zero on a miss.
import type { Benchmark, BenchResult } from "./harness.js";
import { formatResult } from "./harness.js";
import { BENCHMARKS } from "./registry.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const names = args.filter((a) => !a.startsWith("--"));
const unknown = names.filter((n) => !BENCHMARKS.some((b) => b.name === n || b.name.startsWith(`${n}.`) || b.name.startsWith(`${n}/`)));
if (unknown.length) {
  process.stderr.write(`unknown benchmark ${unknown.join(", ")}; available:\n${BENCHMARKS.map((b) => `  ${b.name.padEnd(28)} ${b.description}`).join("\n")}\n`);
  process.exit(2);
}
const selected: Benchmark[] = names.length
  ? BENCHMARKS.filter((b) => names.some((n) => b.name === n || b.name.startsWith(`${n}.`) || b.name.startsWith(`${n}/`)))
  : BENCHMARKS;

const results: BenchResult[] = [];
for (const bench of selected) {
  if (!json) process.stdout.write(`# ${bench.name}: ${bench.description}\n`);
  for (const r of await bench.run()) {
    results.push(r);
    process.stdout.write((json ? JSON.stringify(r) : formatResult(r)) + "\n");
  }
}
if (!json) process.stdout.write(`\n${results.filter((r) => r.pass).length} passed, ${results.filter((r) => !r.pass).length} missed\n`);
process.exit(results.every((r) => r.pass) ? 0 : 1);
