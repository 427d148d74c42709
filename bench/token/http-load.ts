// Child process for the metadata endpoint benchmark: a closed-loop HTTP load generator (N
// concurrent keep-alive clients) so the load does not share the server's event loop. Reads
// one JSON job per stdin line, answers one JSON line: requests/s and latency percentiles.
import http from "node:http";
import { createInterface } from "node:readline";

interface Job {
  url: string;
  headers: Record<string, string>;
  concurrency: number;
  ms: number;
  /** Optional pacing: each client waits so that all together offer about this many req/s. */
  offeredRps?: number;
}

function once(agent: http.Agent, url: URL, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ agent, host: url.hostname, port: url.port, path: url.pathname + url.search, headers }, (res) => {
      res.on("data", () => undefined);
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
  });
}

async function run(job: Job): Promise<{ rps: number; p50: number; p99: number; errors: number }> {
  const url = new URL(job.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency });
  const latencies: number[] = [];
  let errors = 0;
  // Warm the connections first so handshakes are not measured.
  await Promise.all(Array.from({ length: job.concurrency }, () => once(agent, url, job.headers)));
  const start = performance.now();
  const deadline = start + job.ms;
  await Promise.all(
    Array.from({ length: job.concurrency }, async () => {
      const interval = job.offeredRps ? (job.concurrency * 1000) / job.offeredRps : 0;
      // Stagger paced clients so they do not fire in lockstep.
      if (interval) await new Promise((r) => setTimeout(r, Math.random() * interval));
      while (performance.now() < deadline) {
        const t = performance.now();
        const status = await once(agent, url, job.headers);
        const took = performance.now() - t;
        latencies.push(took);
        if (status !== 200) errors++;
        if (interval && interval > took) await new Promise((r) => setTimeout(r, interval - took));
      }
    }),
  );
  const elapsed = performance.now() - start;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] ?? NaN;
  return { rps: (latencies.length * 1000) / elapsed, p50: pct(50), p99: pct(99), errors };
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  void run(JSON.parse(line) as Job).then((r) => process.stdout.write(JSON.stringify(r) + "\n"));
});
