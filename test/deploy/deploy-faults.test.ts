// Deploy faults on a real `trustplane dev` (seed 001): a worker killed with SIGKILL in the
// middle of a validation makes that deployment MALICIOUS/WORKER_CRASHED and the next one
// succeeds on a fresh worker; a server stopped in the middle of a validation leaves the
// deployment for recovery (never judged for the server's own stop), and after the restart it
// is validated again and stored exactly once.
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { JsonWebKey } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { importSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { DeployServiceService, DeploymentStatus, type Deployment } from "../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import { bwrapAvailable } from "../../server/src/deploy/sandbox/sandbox-command.js";
import { startDev, type DevHandle } from "../../server/src/processes/dev-process.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { goodWar, makeZip } from "../../scripts/make-zip-corpus.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function dev(dataDir: string): Promise<DevHandle> {
  const config = loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "warn" } });
  return startDev(config, createLogger({ level: "warn", destination: new PassThrough().resume() }));
}

/** A clean archive that keeps a worker busy for a while: incompressible entries. */
function slowArchive(): Buffer {
  const data = Buffer.alloc(400_000);
  let x = 1;
  for (let i = 0; i < data.length; i++) data[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24;
  return makeZip([{ name: "README.md", data: "# Slow\n" }, ...Array.from({ length: 120 }, (_, i) => ({ name: `blob/${i}.bin`, data: Buffer.concat([Buffer.from(String(i)), data]) }))]);
}

function client(handle: DevHandle) {
  const admin = importSigningKey(JSON.parse(readFileSync(handle.adminKeyFile, "utf8")) as JsonWebKey);
  return createClient(DeployServiceService, handle.server.address, { key: admin });
}

async function push(deploy: ReturnType<typeof client>, bytes: Buffer, requestId: string): Promise<Deployment> {
  const sha256 = createHash("sha256").update(bytes).digest();
  const { deployment } = await deploy.deploy([
    { header: { requestId, aac: { account: "acme", application: "shop", component: "web" }, fileName: "shop.war", declaredSize: bytes.length, sha256 } },
    ...Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) => ({ chunk: bytes.subarray(i * 65536, (i + 1) * 65536) })),
  ]);
  return deployment!;
}

async function final(deploy: ReturnType<typeof client>, operationId: string, onStage?: (d: string) => void): Promise<Deployment> {
  for await (const u of deploy.watchDeployment({ operationId })) {
    onStage?.(u.stage?.detail ?? "");
    if (u.deployment) return u.deployment;
  }
  throw new Error("watch ended without a final state");
}

/**
 * The process groups of workers whose scratch holds an archive: the ones validating right
 * now. bwrap forks once (the outer process leads the group), so one worker is one scratch.
 */
function busyWorkerGroups(dataDir: string): number[] {
  const scratchRoot = path.join(dataDir, "deploy", "scratch");
  const byScratch = new Map<string, number>();
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!argv[0]?.endsWith("bwrap")) continue;
    } catch {
      continue;
    }
    const i = argv.indexOf("--bind");
    const scratch = i >= 0 ? argv[i + 1] : undefined;
    if (scratch?.startsWith(scratchRoot + path.sep) && existsSync(path.join(scratch, "input.zip"))) {
      byScratch.set(scratch, Math.min(byScratch.get(scratch) ?? Infinity, Number(pid)));
    }
  }
  return [...byScratch.values()];
}

describe.skipIf(!bwrapAvailable())("deploy faults on trustplane dev", () => {
  it("kill -9 of the worker mid-validation: MALICIOUS/WORKER_CRASHED, and the next deployment succeeds", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-deploy-kill-"));
    dirs.push(dataDir);
    const handle = await dev(dataDir);
    const deploy = client(handle);
    try {
      const d = await push(deploy, slowArchive(), "kill-1");
      let killed = 0;
      const done = await final(deploy, d.operationId, () => {
        if (killed) return;
        const [group] = busyWorkerGroups(dataDir);
        if (group) {
          killed = group;
          process.kill(-group, "SIGKILL");
        }
      });
      expect(killed).toBeGreaterThan(0);
      expect([DeploymentStatus[done.status], done.reason]).toEqual(["DEPLOYMENT_STATUS_MALICIOUS", "WORKER_CRASHED"]);
      const next = await final(deploy, (await push(deploy, goodWar(), "kill-2")).operationId);
      expect(DeploymentStatus[next.status]).toBe("DEPLOYMENT_STATUS_STORED");
    } finally {
      deploy.close();
      await handle.shutdown();
    }
  }, 120_000);

  it("server stopped mid-validation: nothing judged or half-stored; after the restart it is stored exactly once", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-deploy-restart-"));
    dirs.push(dataDir);
    let handle = await dev(dataDir);
    let deploy = client(handle);
    const d = await push(deploy, slowArchive(), "restart-1");
    // Stop as soon as a worker holds the archive.
    for (let i = 0; i < 500 && busyWorkerGroups(dataDir).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(busyWorkerGroups(dataDir).length).toBe(1);
    deploy.close();
    await handle.shutdown();
    expect(busyWorkerGroups(dataDir)).toEqual([]);

    handle = await dev(dataDir);
    deploy = client(handle);
    try {
      const before = (await deploy.getDeployment({ operationId: d.operationId })).deployment!;
      expect(DeploymentStatus[before.status]).not.toBe("DEPLOYMENT_STATUS_MALICIOUS");
      const done = await final(deploy, d.operationId);
      expect(DeploymentStatus[done.status]).toBe("DEPLOYMENT_STATUS_STORED");
      const stages = [] as string[];
      for await (const u of deploy.watchDeployment({ operationId: d.operationId })) {
        stages.push(DeploymentStatus[u.stage!.status]!);
        if (u.deployment) break;
      }
      expect(stages.filter((s) => s === "DEPLOYMENT_STATUS_STORED")).toHaveLength(1);
      expect(stages.filter((s) => s === "DEPLOYMENT_STATUS_MALICIOUS")).toHaveLength(0);
      const rows = await handle.server.storage.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM deploy_docs WHERE operation_id = ?", [d.operationId]);
      expect(Number(rows!.n)).toBe(1);
    } finally {
      deploy.close();
      await handle.shutdown();
    }
  }, 120_000);
});
