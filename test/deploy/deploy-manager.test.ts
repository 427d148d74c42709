// The trusted deploy server's request manager (seed 001) on SQLite and PostgreSQL, with a
// scripted validator standing in for the sandboxed worker (the real one is tested in
// worker-sandbox.test.ts and end to end in deploy-flow.test.ts): the resource provider's
// AAC and whitelist checks, the atomic store, restart recovery, idempotent pushes, limits and
// the quarantine retention rule.
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { DeploymentStatus, type DeployHeader, type Deployment } from "../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { ArchiveValidator, ValidationOutcome, ValidationRequest } from "../../server/src/deploy/server/archive-validator.js";
import { DeployManager, type DeployLimits } from "../../server/src/deploy/server/deploy-manager.js";
import { DeploymentRepository } from "../../server/src/deploy/server/deployment-repository.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { FsBlobStore, type BlobStore } from "../../server/src/runtime/storage/blob-store.js";
import type { OpenDatabaseOptions } from "../../server/src/runtime/storage/open-database.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { backends } from "../support/backends.js";

const S = DeploymentStatus;
const AAC = { account: "acme", application: "shop", component: "web" };
const status = (d: Deployment | undefined) => (d ? S[d.status] : "missing");

/** Worker output as a well-behaved worker writes it. */
function outputs(roles: string[], aac = AAC) {
  const wrap = (processorId: string, result: unknown) => ({ processorId: processorId as "security", json: { processorId, ...aac, result } });
  return [
    wrap("security", { roles: roles.map((name) => ({ name, source: "web.xml" })), constraints: [], removedRoles: [] }),
    wrap("documentation", { docs: [{ path: "README.md", title: "Shop", toc: [{ level: 1, text: "Shop" }] }] }),
    wrap("metadata", { manifests: [], pomProperties: [], packageJson: { name: "shop", version: "1.0.0", dependencies: [], scriptNames: [] } }),
  ];
}

class ScriptedValidator implements ArchiveValidator {
  calls: ValidationRequest[] = [];
  constructor(public next: (req: ValidationRequest) => Promise<ValidationOutcome>) {}
  validate(req: ValidationRequest): Promise<ValidationOutcome> {
    this.calls.push(req);
    return this.next(req);
  }
}

const ok = (roles = ["admin", "reader"]) => async (): Promise<ValidationOutcome> => ({ ok: true, outputs: outputs(roles), entryCount: 3, uncompressedSize: 100 });

for (const backend of backends()) {
  describe(`deploy manager (${backend.name})`, () => {
    const dirs: string[] = [];
    const opened: Storage[] = [];
    afterAll(async () => {
      for (const s of opened) await s.close();
      await backend.cleanup();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    async function setup(validator: ArchiveValidator, opts: { dbOpts?: OpenDatabaseOptions; dir?: string; limits?: Partial<DeployLimits>; blobs?: BlobStore; now?: () => number } = {}) {
      const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), "tp-deploy-mgr-"));
      if (!opts.dir) dirs.push(dir);
      const dbOpts = opts.dbOpts ?? (await backend.fresh());
      const storage = await Storage.open(dbOpts);
      opened.push(storage);
      const repo = new DeploymentRepository(storage.db);
      const blobs = opts.blobs ?? new FsBlobStore(path.join(dir, "blobs"));
      const manager = new DeployManager({ storage, repo, blobs, validator, quarantineDir: path.join(dir, "quarantine"), logger: createLogger({ level: "silent" }), limits: opts.limits, now: opts.now });
      return { dir, dbOpts, storage, repo, blobs, manager };
    }

    function stream(bytes: Buffer, header: Partial<DeployHeader> = {}, chunks = 1) {
      const h: DeployHeader = { requestId: "", aac: AAC, fileName: "shop.war", declaredSize: bytes.length, sha256: createHash("sha256").update(bytes).digest(), ...header };
      const size = Math.ceil(bytes.length / chunks);
      return (async function* () {
        yield { header: h };
        for (let i = 0; i < bytes.length; i += size) yield { chunk: bytes.subarray(i, i + size) };
      })();
    }

    async function settled(repo: DeploymentRepository, id: string): Promise<Deployment> {
      for (let i = 0; i < 400; i++) {
        const d = await repo.get(id);
        if (d && [S.DEPLOYMENT_STATUS_STORED, S.DEPLOYMENT_STATUS_MALICIOUS, S.DEPLOYMENT_STATUS_REJECTED].includes(d.status)) return d;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`deployment ${id} did not settle`);
    }

    const domainRows = async (storage: Storage) =>
      Number((await storage.db.get<{ n: number }>("SELECT (SELECT COUNT(*) FROM deploy_roles) + (SELECT COUNT(*) FROM deploy_docs) + (SELECT COUNT(*) FROM deploy_metadata) AS n"))!.n);

    it("stores artifact and domain records together, merging a role several descriptors declare", async () => {
      const v = new ScriptedValidator(async () => ({
        ok: true,
        outputs: [
          { processorId: "security", json: { processorId: "security", ...AAC, result: { roles: [{ name: "admin" }, { name: "admin", description: "administers" }, { name: "auditor" }], constraints: [] } } },
        ],
        entryCount: 1,
        uncompressedSize: 1,
      }));
      const { manager, repo, blobs, storage } = await setup(v);
      const d = await settled(repo, (await manager.receive(stream(Buffer.from("archive-1"), {}, 3), "admin", true)).operationId);
      expect(status(d)).toBe("DEPLOYMENT_STATUS_STORED");
      expect(d.roles).toEqual([{ name: "admin", description: "administers" }, { name: "auditor", description: "" }]);
      expect(await blobs.has(d.artifactDigest)).toBe(true);
      expect(await domainRows(storage)).toBe(2);
      // The validator got what the upload verified, so the pool never re-reads the archive.
      expect(Buffer.from(v.calls[0]!.sha256!)).toEqual(createHash("sha256").update("archive-1").digest());
    });

    it("a later deployment of the same AAC supersedes the stored one in the same transaction", async () => {
      const { manager, repo, storage } = await setup(new ScriptedValidator(ok(["admin", "reader"])));
      const first = await settled(repo, (await manager.receive(stream(Buffer.from("v1")), "admin", true)).operationId);
      const second = await settled(repo, (await manager.receive(stream(Buffer.from("v2")), "admin", true)).operationId);
      expect(status(second)).toBe("DEPLOYMENT_STATUS_STORED");
      expect(status(await repo.get(first.operationId))).toBe("DEPLOYMENT_STATUS_SUPERSEDED");
      const owners = await storage.db.all<{ operation_id: string }>("SELECT DISTINCT operation_id FROM deploy_roles");
      expect(owners.map((o) => o.operation_id)).toEqual([second.operationId]);
      // Replaying the first one's stages ends at SUPERSEDED, not at its old STORED.
      const seen: string[] = [];
      for await (const u of manager.watch(first.operationId, new AbortController().signal)) seen.push(S[u.stage.status]!);
      expect(seen.slice(-2)).toEqual(["DEPLOYMENT_STATUS_STORED", "DEPLOYMENT_STATUS_SUPERSEDED"]);
      await expect(manager.undeploy(first.operationId, "admin", "u-1")).rejects.toMatchObject({ status: "FAILED_PRECONDITION" });
    });

    it("answers a worker's resource request only for its own AAC and only from the whitelist", async () => {
      const answers: Record<string, unknown> = {};
      const { manager, repo } = await setup(
        new ScriptedValidator(async (req) => {
          for (const [name, call] of [
            ["own", () => req.resources!("roles.current", AAC)],
            ["foreign", () => req.resources!("roles.current", { ...AAC, account: "other" })],
            ["unlisted", () => req.resources!("database.dump", AAC)],
            ["runtime", () => req.resources!("runtime.descriptor", AAC)],
          ] as const) {
            answers[name] = await call().then((json) => JSON.parse(json) as unknown, (e: TrustplaneError) => `${e.status}/${e.reason}`);
          }
          return ok(["writer"])();
        }),
      );
      // The first deployment stores role "writer"; the second one's worker asks about it.
      await settled(repo, (await manager.receive(stream(Buffer.from("a")), "admin", true)).operationId);
      const again = await settled(repo, (await manager.receive(stream(Buffer.from("b")), "admin", true)).operationId);
      expect(status(again)).toBe("DEPLOYMENT_STATUS_STORED");
      expect(answers.own).toEqual({ roles: [{ name: "writer", description: "" }] });
      expect(answers.foreign).toBe("PERMISSION_DENIED/AAC_MISMATCH");
      expect(answers.unlisted).toBe("PERMISSION_DENIED/PROVIDER_NOT_ALLOWED");
      expect(answers.runtime).toMatchObject({ runtime: "node" });
    });

    it("records a worker output for another AAC, or from an unknown processor, as malicious and stores nothing", async () => {
      for (const [json, reason] of [
        [{ processorId: "security", ...AAC, account: "evil", result: { roles: [] } }, "AAC_MISMATCH"],
        [{ processorId: "documentation", ...AAC, result: { docs: [] } }, "WORKER_OUTPUT_INVALID"],
      ] as const) {
        const { manager, repo, storage, blobs, dir } = await setup(new ScriptedValidator(async () => ({ ok: true, outputs: [{ processorId: "security", json }], entryCount: 1, uncompressedSize: 1 })));
        const d = await settled(repo, (await manager.receive(stream(Buffer.from(`x-${reason}`)), "admin", true)).operationId);
        expect([status(d), d.reason]).toEqual(["DEPLOYMENT_STATUS_MALICIOUS", reason]);
        expect(await domainRows(storage)).toBe(0);
        expect(await blobs.has(createHash("sha256").update(`x-${reason}`).digest("hex"))).toBe(false);
        // The bytes stay in quarantine for inspection.
        expect(existsSync(path.join(dir, "quarantine", `${d.operationId}.archive`))).toBe(true);
      }
    });

    it("a failure while storing leaves no half-stored deployment: REJECTED/STORE_FAILED, no domain rows", async () => {
      const { manager, repo, storage } = await setup(new ScriptedValidator(ok()));
      // Sabotage the domain write after the first role row went in, inside the store transaction.
      const original = repo.replaceDomain.bind(repo);
      repo.replaceDomain = async (d) => {
        await original({ ...d, docs: [], metadata: new Map() });
        throw new Error("disk full");
      };
      const d = await settled(repo, (await manager.receive(stream(Buffer.from("s")), "admin", true)).operationId);
      expect([status(d), d.reason]).toEqual(["DEPLOYMENT_STATUS_REJECTED", "STORE_FAILED"]);
      expect(d.detail).toContain("disk full");
      expect(d.artifactDigest).toBe("");
      expect(await domainRows(storage)).toBe(0);
    });

    it("a blob store failure ends REJECTED/STORE_FAILED too", async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "tp-deploy-mgr-"));
      dirs.push(dir);
      const real = new FsBlobStore(path.join(dir, "blobs"));
      const failing: BlobStore = { ...real, has: real.has.bind(real), get: real.get.bind(real), stat: real.stat.bind(real), delete: real.delete.bind(real), put: async () => Promise.reject(new Error("blob store offline")) };
      const { manager, repo, storage } = await setup(new ScriptedValidator(ok()), { dir, blobs: failing });
      const d = await settled(repo, (await manager.receive(stream(Buffer.from("b")), "admin", true)).operationId);
      expect([status(d), d.reason]).toEqual(["DEPLOYMENT_STATUS_REJECTED", "STORE_FAILED"]);
      expect(await domainRows(storage)).toBe(0);
    });

    it("after a restart mid-validation the deployment is validated again and stored once; an interrupted upload is rejected", async () => {
      let hang!: () => void;
      const stuck = new ScriptedValidator(() => new Promise<ValidationOutcome>((r) => (hang = () => r({ ok: false, reason: "WORKER_CRASHED", detail: "server stopped" }))));
      const first = await setup(stuck);
      const d = await first.manager.receive(stream(Buffer.from("r")), "admin", true);
      while (!stuck.calls.length) await new Promise((r) => setTimeout(r, 5));
      // An upload cut off by the same stop: its record says RECEIVING, its bytes are a .part.
      await first.repo.create({ ...d, operationId: "op_cut", status: S.DEPLOYMENT_STATUS_RECEIVING });
      writeFileSync(path.join(first.dir, "quarantine", "op_cut.archive.part"), "half");
      // "Stop": the process dies with validation in flight (the stuck promise never settles here).
      await first.storage.close();

      const second = await setup(new ScriptedValidator(ok()), { dbOpts: first.dbOpts, dir: first.dir });
      await second.manager.recover();
      const resumed = await settled(second.repo, d.operationId);
      expect(status(resumed)).toBe("DEPLOYMENT_STATUS_STORED");
      const cut = await settled(second.repo, "op_cut");
      expect([status(cut), cut.reason]).toEqual(["DEPLOYMENT_STATUS_REJECTED", "UPLOAD_INTERRUPTED"]);
      expect(existsSync(path.join(first.dir, "quarantine", "op_cut.archive.part"))).toBe(false);
      // Stored exactly once: one stage says stored.
      const stages = await second.repo.stagesAfter(d.operationId, 0);
      expect(stages.filter((s) => s.status === S.DEPLOYMENT_STATUS_STORED)).toHaveLength(1);
      hang();
    });

    it("is idempotent under the header's request_id, and refuses a different push under a used one", async () => {
      const v = new ScriptedValidator(ok());
      const { manager, repo } = await setup(v);
      const bytes = Buffer.from("idem");
      const a = await manager.receive(stream(bytes, { requestId: "push-1" }), "admin", true);
      const b = await manager.receive(stream(bytes, { requestId: "push-1" }), "admin", true);
      expect(b.operationId).toBe(a.operationId);
      await settled(repo, a.operationId);
      expect(v.calls).toHaveLength(1);
      await expect(manager.receive(stream(Buffer.from("other"), { requestId: "push-1" }), "admin", true)).rejects.toMatchObject({ status: "ALREADY_EXISTS", reason: "REQUEST_ID_REUSED" });
      // Concurrent duplicates collapse into one deployment too.
      const [c, e] = await Promise.all([
        manager.receive(stream(bytes, { requestId: "push-2" }), "admin", true),
        manager.receive(stream(bytes, { requestId: "push-2" }), "admin", true),
      ]);
      expect(c.operationId).toBe(e.operationId);
      expect((await repo.list({ pageSize: 100 })).items).toHaveLength(2);
    });

    it("enforces upload limits, declared sizes and digests, the AAC owner and per-account concurrency", async () => {
      const hold: (() => void)[] = [];
      const v = new ScriptedValidator(() => new Promise<ValidationOutcome>((r) => hold.push(() => r({ ok: false, reason: "ARCHIVE_CORRUPT", detail: "x" }))));
      const { manager, dir } = await setup(v, { limits: { maxUploadBytes: 64, maxConcurrentPerAccount: 2 } });
      const reason = (p: Promise<unknown>) => p.then(() => "OK", (e: TrustplaneError) => `${e.status}/${e.reason}`);
      expect(await reason(manager.receive(stream(Buffer.alloc(65)), "admin", true))).toBe("RESOURCE_EXHAUSTED/UPLOAD_TOO_LARGE");
      // Refused at the first chunk, before the quarantine file's open has completed: many
      // times over, so a cleanup that runs ahead of the open leaves a .part behind.
      for (let i = 0; i < 20; i++) expect(await reason(manager.receive(stream(Buffer.alloc(10), { declaredSize: 5 }), "admin", true))).toBe("INVALID_ARGUMENT/UPLOAD_SIZE_MISMATCH");
      expect(await reason(manager.receive(stream(Buffer.alloc(10), { declaredSize: 9 }), "admin", true))).toBe("INVALID_ARGUMENT/UPLOAD_SIZE_MISMATCH");
      expect(await reason(manager.receive(stream(Buffer.alloc(10), { declaredSize: 11 }), "admin", true))).toBe("INVALID_ARGUMENT/UPLOAD_SIZE_MISMATCH");
      expect(await reason(manager.receive(stream(Buffer.alloc(10), { sha256: Buffer.alloc(32) }), "admin", true))).toBe("DATA_LOSS/UPLOAD_DIGEST_MISMATCH");
      expect(await reason(manager.receive(stream(Buffer.alloc(10), { fileName: "../x.war" }), "admin", true))).toBe("INVALID_ARGUMENT/INVALID_ARGUMENT");
      expect(await reason(manager.receive(stream(Buffer.alloc(10)), "mallory", false))).toBe("PERMISSION_DENIED/AAC_DENIED");
      // Nothing of the refused uploads is left in quarantine.
      expect(readdirSync(path.join(dir, "quarantine")).filter((f) => f.endsWith(".part"))).toEqual([]);
      await manager.receive(stream(Buffer.from("1")), "admin", true);
      await manager.receive(stream(Buffer.from("2")), "admin", true);
      expect(await reason(manager.receive(stream(Buffer.from("3")), "admin", true))).toBe("RESOURCE_EXHAUSTED/TOO_MANY_DEPLOYMENTS");
      expect(await reason(manager.receive(stream(Buffer.from("4"), { aac: { ...AAC, account: "globex" } }), "admin", true))).toBe("OK");
      for (const h of hold) h();
    });

    it("purges quarantined archives of failed deployments after the retention, never an active one", async () => {
      let now = Date.now();
      const hold: (() => void)[] = [];
      let mode: "reject" | "hold" = "reject";
      const v = new ScriptedValidator(() =>
        mode === "reject" ? Promise.resolve({ ok: false, reason: "ARCHIVE_OVERLAP", detail: "bomb" }) : new Promise<ValidationOutcome>((r) => hold.push(() => r({ ok: false, reason: "ARCHIVE_CORRUPT", detail: "x" }))),
      );
      const { manager, repo, dir } = await setup(v, { limits: { quarantineRetentionMs: 60_000 }, now: () => now });
      const bad = await settled(repo, (await manager.receive(stream(Buffer.from("bomb")), "admin", true)).operationId);
      mode = "hold";
      const active = await manager.receive(stream(Buffer.from("slow")), "admin", true);
      const file = (id: string) => path.join(dir, "quarantine", `${id}.archive`);
      const old = new Date(now - 120_000);
      for (const id of [bad.operationId, active.operationId]) utimesSync(file(id), old, old);
      expect(await manager.purgeQuarantine()).toBe(1);
      expect(existsSync(file(bad.operationId))).toBe(false);
      expect(existsSync(file(active.operationId))).toBe(true);
      now += 1;
      for (const h of hold) h();
    });
  });
}
