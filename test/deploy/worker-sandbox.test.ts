// The deploy worker through its real sandbox (seed 001): bubblewrap confinement (no network,
// nothing readable outside scratch), the WorkerPool's recycling after kill -9 and timeouts,
// corpus rejection across the process boundary, and a measurement of the overlap bomb.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { createServer, type Server } from "node:net";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { WorkerPool } from "../../server/src/deploy/sandbox/worker-pool.js";
import { bwrapAvailable, sandboxArgv } from "../../server/src/deploy/sandbox/sandbox-command.js";
import { goodNodeApp, goodWar, maliciousCases, makeZip, overlapBomb } from "../../scripts/make-zip-corpus.js";

const binRoot = mkdtempSync(join(tmpdir(), "tp-deploy-bin-"));
const binDir = join(binRoot, "bin");
afterAll(() => rmSync(binRoot, { recursive: true, force: true }));

const aac = { account: "acme", application: "orders", component: "web" };
const root = mkdtempSync(join(tmpdir(), "tp-deploy-test-"));
const corpus = join(root, "corpus");
mkdirSync(corpus);
function put(name: string, bytes: Buffer): string { const p = join(corpus, name); writeFileSync(p, bytes); return p; }

describe.skipIf(!bwrapAvailable())("sandboxed deploy worker", () => {
  let pool: WorkerPool;
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    pool = new WorkerPool({ scratchRoot: join(root, "scratch"), size: 1, timeoutMs: 20_000 });
    server = createServer((s) => s.end("hi"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await pool.close();
    server.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("validates a good WAR and Node app and returns sub-processor outputs", async () => {
    const r = await pool.validate({ operationId: "op-war", aac, archivePath: put("good.war", goodWar()) });
    expect(r).toMatchObject({ ok: true });
    if (!r.ok) return;
    const byId = Object.fromEntries(r.outputs.map((o) => [o.processorId, o.json as { result: Record<string, unknown>; account: string }]));
    expect(byId.security!.account).toBe("acme");
    const sec = byId.security!.result as { roles: { name: string }[]; constraints: { urlPatterns: string[]; roles: string[] }[] };
    expect(sec.roles.map((x) => x.name).sort()).toEqual(["admin", "admin", "auditor", "viewer"]);
    expect(sec.constraints).toEqual([{ name: "admin area", urlPatterns: ["/admin/*"], httpMethods: ["POST"], roles: ["admin"] }]);
    const meta = byId.metadata!.result as { manifests: { bundleSymbolicName: string; importPackage: string[] }[]; pomProperties: { artifactId: string }[] };
    expect(meta.manifests[0]!.bundleSymbolicName).toBe("com.example.orders");
    expect(meta.manifests[0]!.importPackage).toEqual(['org.osgi.framework;version="[1.8,2)"', 'javax.servlet;version="4.0"']);
    expect(meta.pomProperties[0]!.artifactId).toBe("lib");
    const docs = byId.documentation!.result as { docs: { title: string; toc: unknown[] }[] };
    expect(docs.docs[0]!.title).toBe("Orders service");

    const n = await pool.validate({ operationId: "op-node", aac, archivePath: put("good-node.zip", goodNodeApp()) });
    expect(n.ok).toBe(true);
    if (!n.ok) return;
    const nm = n.outputs.find((o) => o.processorId === "metadata")!.json as { result: { packageJson: { name: string; scriptNames: string[] } } };
    expect(nm.result.packageJson.name).toBe("orders-api");
    expect(nm.result.packageJson.scriptNames).toEqual(["postinstall"]);
    const ns = n.outputs.find((o) => o.processorId === "security")!.json as { result: { roles: { name: string }[] } };
    expect(ns.result.roles.map((x) => x.name)).toEqual(["reader", "writer"]);
  });

  it("rejects corpus cases across the process boundary with their own reasons", async () => {
    for (const c of maliciousCases().filter((c) => ["zip-slip-unix.zip", "quoted-overlap-bomb.zip", "size-lie-smaller.zip", "bad-crc.zip"].includes(c.file))) {
      const r = await pool.validate({ operationId: `op-${c.file}`, aac, archivePath: put(c.file, c.bytes) });
      expect(r.ok ? "OK" : r.reason).toBe(c.reason);
    }
  });

  it("a sandboxed process cannot reach the network, read /etc/shadow, another scratch, the repository or a data dir in it, or write /usr", () => {
    const mine = mkdtempSync(join(root, "probe-"));
    const other = mkdtempSync(join(root, "other-"));
    writeFileSync(join(other, "secret.txt"), "s");
    // `trustplane dev` keeps its data (admin key, database) under ./.trustplane by default,
    // which is inside the repository when run from a checkout.
    const inRepo = mkdtempSync(resolve(".tp-sandbox-probe-"));
    writeFileSync(join(inRepo, "admin.jwk.json"), "{}");
    const targets = ["/etc/shadow", join(other, "secret.txt"), resolve("package.json"), join(inRepo, "admin.jwk.json")];
    try {
      for (const target of targets) {
        const argv = sandboxArgv(mine, resolve("test/deploy/fixtures/escape-probe.ts"), binDir, undefined, [target, String(port)]);
        const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", env: { PATH: "/usr/bin:/bin" }, timeout: 20_000 });
        const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as Record<string, string>;
        expect([target, out.read]).toEqual([target, "ENOENT"]);
        expect(out.connect).not.toBe("OK");
        expect(out.writeScratch).toBe("OK");
        expect(out.writeUsr).not.toBe("OK");
      }
      // The same probe unconfined reaches the loopback server and reads every target: the
      // assertions above are meaningful.
      for (const target of targets.slice(1)) {
        const plain = spawnSync(process.execPath, ["--import", "tsx", "test/deploy/fixtures/escape-probe.ts", target, String(port)], { encoding: "utf8", timeout: 20_000 });
        const po = JSON.parse(plain.stdout.trim().split("\n").pop()!) as Record<string, string>;
        expect(po.connect).toBe("OK");
        expect([target, po.read]).toEqual([target, "OK"]);
      }
    } finally {
      rmSync(inRepo, { recursive: true, force: true });
    }
  });

  it("a hostile worker's resource requests about another AAC are refused at the pool, before any provider runs", async () => {
    const hostile = new WorkerPool({ scratchRoot: join(root, "scratch-hostile"), size: 1, timeoutMs: 20_000, workerScript: resolve("test/deploy/fixtures/hostile-worker.ts") });
    const asked: string[] = [];
    try {
      const r = await hostile.validate({
        operationId: "op-hostile", aac, archivePath: put("h.war", goodWar()),
        // A provider that would answer anything: only the pool's own AAC check stands between.
        resources: async (providerId, forAac) => (asked.push(`${providerId}@${forAac.account}`), JSON.stringify({ roles: [{ name: "r" }] })),
      });
      expect(r.ok ? "OK" : r.reason).toBe("HOSTILE_REPORT");
      const answers = JSON.parse(r.ok ? "{}" : r.detail) as Record<string, string>;
      expect(answers["1"]).toBe("AAC_MISMATCH");
      expect(answers["3"]).toBe('json:{"roles":[{"name":"r"}]}');
      expect(asked).toEqual(["database.dump@acme", "roles.current@acme"]);
    } finally {
      await hostile.close();
    }
  });

  it("kill -9 mid-validation reports WORKER_CRASHED and a fresh worker serves the next archive", async () => {
    await pool.start();
    const before = pool.stats();
    const big = put("big.zip", bigArchive());
    let killed = 0;
    // Kill the busy worker's whole group at its first progress report: mid-validation.
    const pending = pool.validate({
      operationId: "op-kill", aac, archivePath: big,
      onProgress: () => {
        if (killed) return;
        killed = pool.busyPids()[0] ?? 0;
        if (killed) process.kill(-killed, "SIGKILL");
      },
    });
    const r = await pending;
    expect(killed).toBeGreaterThan(0);
    expect(r.ok ? "OK" : r.reason).toBe("WORKER_CRASHED");
    // The crashed worker was retired and a replacement started: recycling is observable.
    const after = pool.stats();
    expect(after.recycled).toBeGreaterThan(before.recycled);
    expect(after.started).toBeGreaterThan(before.started);
    expect(after.busy).toBe(0);
    const next = await pool.validate({ operationId: "op-after-kill", aac, archivePath: put("good2.war", goodWar()) });
    expect(next.ok).toBe(true);
  });

  it("timeout → WORKER_TIMEOUT, scratch wiped, next archive succeeds", async () => {
    const before = new Set(readdir(join(root, "scratch")));
    const r = await pool.validate({ operationId: "op-timeout", aac, archivePath: put("big2.zip", bigArchive()), timeoutMs: 150 });
    expect(r.ok ? "OK" : r.reason).toBe("WORKER_TIMEOUT");
    await new Promise((res) => setTimeout(res, 200));
    const gone = [...before].filter((d) => !existsSync(join(root, "scratch", d)));
    expect(gone.length).toBeGreaterThanOrEqual(1);
    const next = await pool.validate({ operationId: "op-after-timeout", aac, archivePath: put("good3.war", goodWar()) });
    expect(next).toMatchObject({ ok: true });
  });

  it("measures rejecting a 42 kB-class overlap bomb in the worker", async () => {
    const bomb = overlapBomb(250, 1 << 22, true);
    const p = put("bomb.zip", bomb);
    await pool.validate({ operationId: "warm", aac, archivePath: put("g4.war", goodWar()) });
    const pid = pool.idlePids()[0]!;
    const t0 = performance.now();
    const r = await pool.validate({ operationId: "op-bomb", aac, archivePath: p });
    const ms = performance.now() - t0;
    expect(r.ok ? "OK" : r.reason).toBe("ARCHIVE_OVERLAP");
    console.log(`[measure] overlap bomb ${bomb.length} bytes rejected in ${ms.toFixed(1)} ms round trip; worker group pid ${pid}`);
    const dir = mkdtempSync(join(root, "measure-"));
    writeFileSync(join(dir, "bomb.zip"), bomb);
    const argv = sandboxArgv(dir, resolve("test/deploy/fixtures/measure-bomb.ts"), binDir);
    const m = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", env: { PATH: "/usr/bin:/bin" }, timeout: 20_000 });
    const res = JSON.parse(m.stdout.trim().split("\n").pop()!) as { reason: string; ms: number; maxRssKiB: number };
    expect(res.reason).toBe("ARCHIVE_OVERLAP");
    console.log(`[measure] in-sandbox core processor: ${res.ms.toFixed(2)} ms, worker process peak RSS ${(res.maxRssKiB / 1024).toFixed(1)} MiB (node baseline included)`);
  });
});

function readdir(d: string): string[] {
  return existsSync(d) ? (spawnSync("ls", [d], { encoding: "utf8" }).stdout.split("\n").filter(Boolean)) : [];
}

/** A clean, large-ish archive that takes the worker a few hundred ms (many stored+deflated entries). */
let bigCache: Buffer | undefined;
function bigArchive(): Buffer {
  if (bigCache) return bigCache;

  const data = Buffer.alloc(200_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  bigCache = makeZip(Array.from({ length: 150 }, (_, i) => ({ name: `d/f${i}.bin`, data })));

  return bigCache;
}
