// Deploy validation benchmarks (issue 6, seed 001):
// - a clean 100 MiB archive of 10,000 entries validated through the real process boundary
//   (WorkerPool → bubblewrap → worker: copy into scratch, digest, pre-pass, budgeted inflation
//   with CRC checks, sub-processors, result files) against raw yauzl inflate-and-discard of
//   the same file in this process, alternating rounds; target ≥ 0.5;
// - a 42 kB-class Fifield quoted-overlap bomb rejected in the sandboxed worker: its time and
//   the worker process's peak RSS, measured inside the sandbox; targets < 100 ms, < 64 MiB.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import yauzl from "yauzl";
import { WorkerPool } from "../../server/src/deploy/sandbox/worker-pool.js";
import { bwrapAvailable, sandboxArgv } from "../../server/src/deploy/sandbox/sandbox-command.js";
import { makeZip, overlapBomb } from "../../scripts/make-zip-corpus.js";
import { interleaved, median, result, type Benchmark } from "../harness.js";

const MiB = 1024 * 1024;
const AAC = { account: "bench", application: "deploy", component: "web" };

/** 10,000 entries of word-like text (deflates about 2:1), about 100 MiB compressed. */
function cleanArchive(): Buffer {
  const words = Array.from({ length: 4096 }, (_, i) => (i * 2654435761 >>> 0).toString(36).slice(0, 3 + (i % 7)));
  let x = 12345;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const entry = (n: number) => {
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const w = words[next() >>> 20]!;
      parts.push(w);
      len += w.length + 1;
    }
    return Buffer.from(parts.join(" "));
  };
  return makeZip(Array.from({ length: 10_000 }, (_, i) => ({ name: `assets/${i % 100}/file-${i}.txt`, data: entry(20_000) })));
}

function yauzlInflateAndDiscard(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    yauzl.open(file, { lazyEntries: true }, (err, zf) => {
      if (err || !zf) return reject(err ?? new Error("no zipfile"));
      zf.on("error", reject);
      zf.on("end", () => resolve(bytes));
      zf.on("entry", (e: yauzl.Entry) => {
        if (e.fileName.endsWith("/")) return zf.readEntry();
        zf.openReadStream(e, (err2, rs) => {
          if (err2 || !rs) return reject(err2 ?? new Error("no stream"));
          rs.on("data", (c: Buffer) => (bytes += c.length));
          rs.on("end", () => zf.readEntry());
          rs.on("error", reject);
        });
      });
      zf.readEntry();
    });
  });
}

const validate100: Benchmark = {
  name: "deploy.validate-100mib",
  description: "clean 100 MiB / 10,000-entry archive through the sandboxed worker vs raw yauzl inflate-and-discard; target ≥ 0.5",
  async run() {
    if (!bwrapAvailable()) throw new Error("bubblewrap is not installed (npm run setup installs it)");
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-deploy-"));
    const pool = new WorkerPool({ scratchRoot: path.join(dir, "scratch"), size: 1, timeoutMs: 120_000 });
    try {
      const t0 = performance.now();
      const bytes = cleanArchive();
      const file = path.join(dir, "clean.zip");
      writeFileSync(file, bytes);
      const sha256 = createHash("sha256").update(bytes).digest();
      const built = performance.now() - t0;
      await pool.start();
      let inflated = 0;
      const rounds = await interleaved(
        3,
        async () => {
          const s = performance.now();
          inflated = await yauzlInflateAndDiscard(file);
          return performance.now() - s;
        },
        async () => {
          const s = performance.now();
          const r = await pool.validate({ operationId: "bench", aac: AAC, archivePath: file, sha256 });
          if (!r.ok) throw new Error(`the clean archive was rejected: ${r.reason} ${r.detail}`);
          return performance.now() - s;
        },
      );
      return [
        result({
          name: this.name,
          value: rounds.value,
          baseline: rounds.baseline,
          unit: "ms",
          target: 0.5,
          lowerIsBetter: true,
          note: `archive ${(bytes.length / MiB).toFixed(1)} MiB, ${(inflated / MiB).toFixed(1)} MiB inflated, 10,000 entries (built in ${(built / 1000).toFixed(1)} s); medians of 3 alternating rounds; load avg ${os.loadavg()[0]!.toFixed(1)}`,
        }),
      ];
    } finally {
      await pool.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

/** Picks overlap-bomb parameters whose file is about 42 kB, as Fifield's zbsm.zip. */
function fortyTwoKbBomb(): { bytes: Buffer; expands: number } {
  const kernel = 16 * MiB;
  let files = 100;
  let bytes = overlapBomb(files, kernel, true);
  while (bytes.length < 42_000) {
    files += 25;
    bytes = overlapBomb(files, kernel, true);
  }
  return { bytes, expands: files * kernel };
}

const overlap42k: Benchmark = {
  name: "deploy.overlap-bomb-42kb",
  description: "42 kB quoted-overlap bomb rejected inside the sandboxed worker: worker time < 100 ms, worker peak RSS < 64 MiB",
  async run() {
    if (!bwrapAvailable()) throw new Error("bubblewrap is not installed (npm run setup installs it)");
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-bomb-"));
    try {
      const { bytes, expands } = fortyTwoKbBomb();
      const scratch = path.join(dir, "scratch");
      mkdirSync(scratch);
      writeFileSync(path.join(scratch, "bomb.zip"), bytes);
      const fixture = path.resolve("test/deploy/fixtures/measure-bomb.ts");
      const runs: { reason: string; ms: number; maxRssKiB: number }[] = [];
      for (let i = 0; i < 5; i++) {
        const argv = sandboxArgv(scratch, fixture, path.join(dir, "bin"));
        const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", env: { PATH: "/usr/bin:/bin" }, timeout: 30_000 });
        const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as { reason: string; ms: number; maxRssKiB: number };
        if (out.reason !== "ARCHIVE_OVERLAP") throw new Error(`the bomb was not rejected as an overlap: ${JSON.stringify(out)} ${r.stderr.slice(0, 300)}`);
        runs.push(out);
      }
      const ms = median(runs.map((r) => r.ms));
      const rss = median(runs.map((r) => r.maxRssKiB / 1024));
      const what = `${bytes.length} bytes claiming ${(expands / 1e9).toFixed(1)} GB; median of ${runs.length} sandboxed runs; load avg ${os.loadavg()[0]!.toFixed(1)}`;
      return [
        result({ name: `${this.name}.worker-ms`, value: ms, baseline: 100, unit: "ms", target: 1, lowerIsBetter: true, note: what }),
        result({ name: `${this.name}.worker-rss`, value: rss, baseline: 64, unit: "MiB", target: 1, lowerIsBetter: true, note: `peak RSS of the whole worker process (node itself included); ${what}` }),
      ];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export const DEPLOY_BENCHMARKS: Benchmark[] = [validate100, overlap42k];
