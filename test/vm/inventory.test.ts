// The SQL host inventory on SQLite and PostgreSQL (issue 4 "Hosts" and atomic claims): register,
// heartbeat and mark-down, idempotent claims and releases, and 100 concurrent claims / creates
// on 20 hosts that must never over-commit a host. PostgreSQL runs in a fresh schema (dropped
// afterwards) when TRUSTPLANE_TEST_DATABASE_URL is set and is reported as skipped otherwise.
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { Feature, HypervisorType } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { SqlDb } from "../../server/src/runtime/storage/sql-db.js";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import type { HostRegistration } from "../../server/src/vm/manager/host-inventory.js";
import { CachedHostInventory } from "../../server/src/vm/manager/host-inventory-cache.js";
import { MemoryHostInventory } from "../../server/src/vm/manager/host-inventory-memory.js";
import { SqlHostInventory } from "../../server/src/vm/manager/host-inventory-sql.js";
import { vmHostInventory } from "../../server/src/vm/manager/vm-migration.js";
import { ClaimingScheduler } from "../../server/src/vm/scheduler/claiming-scheduler.js";
import { PG_URL, postgresBackend, sqliteBackend, type Backend } from "../support/backends.js";

const QEMU = HypervisorType.HYPERVISOR_TYPE_QEMU;

const reg = (id: string, over: Partial<HostRegistration> = {}): HostRegistration => ({
  hostId: id,
  region: "eu-1",
  // 2 cores × CPU ratio 4.0 = 8 schedulable vCPUs; 4096 MiB × 1.0; 100 GiB × 1.0.
  total: { vcpus: 2, memoryMib: 4096, diskGib: 100 },
  hypervisors: [{ hypervisor: QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG], accelerator: "tcg", cost: 4 }],
  ...over,
});

const variants: { name: string; backend: Backend | undefined }[] = [
  { name: "sqlite", backend: sqliteBackend() },
  { name: "postgres", backend: PG_URL ? postgresBackend(PG_URL) : undefined },
];

for (const { name, backend } of variants) {
  // Visible in the report as skipped, not silently absent.
  describe.skipIf(!backend)(`SqlHostInventory on ${name}${backend ? "" : " (TRUSTPLANE_TEST_DATABASE_URL unset)"}`, () => {
    let db: SqlDb;
    let inv: SqlHostInventory;
    const dbs: SqlDb[] = [];

    beforeEach(async () => {
      db = await openDatabase({ ...(await backend!.fresh()), migrations: [vmHostInventory] });
      dbs.push(db);
      inv = new SqlHostInventory(db);
    });

    afterAll(async () => {
      for (const d of dbs) await d.close();
      await backend!.cleanup();
    });

    it("registers hosts with default ratios and round-trips every field", async () => {
      const h = await inv.register(reg("h1", { ratios: { ram: 1.5 }, load: 0.25, instanceCount: 3, latencyMs: 2.5 }), 1000);
      expect(h).toEqual({
        hostId: "h1",
        region: "eu-1",
        total: { vcpus: 2, memoryMib: 4096, diskGib: 100 },
        used: { vcpus: 0, memoryMib: 0, diskGib: 0 },
        ratios: { cpu: 4, ram: 1.5, disk: 1 },
        hypervisors: [{ hypervisor: QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG], accelerator: "tcg", cost: 4 }],
        load: 0.25,
        instanceCount: 3,
        latencyMs: 2.5,
        up: true,
        lastHeartbeatMs: 1000,
      });
      await expect(inv.register(reg("bad", { ratios: { cpu: 0 } }), 1)).rejects.toMatchObject({ reason: "INVALID_ARGUMENT" });
      await expect(inv.register(reg("bad", { total: { vcpus: -1, memoryMib: 1, diskGib: 1 } }), 1)).rejects.toMatchObject({ reason: "INVALID_ARGUMENT" });
    });

    it("re-registering keeps the server's claims", async () => {
      await inv.register(reg("h1"), 0);
      expect(await inv.claim("h1", { vcpus: 3, memoryMib: 1024, diskGib: 5 }, "c1")).toBe(true);
      await inv.register(reg("h1", { total: { vcpus: 4, memoryMib: 8192, diskGib: 100 } }), 5);
      expect((await inv.get("h1"))!.used).toEqual({ vcpus: 3, memoryMib: 1024, diskGib: 5 });
    });

    it("marks down hosts that missed heartbeats; heartbeats bring them back", async () => {
      await inv.register(reg("a"), 1000);
      await inv.register(reg("b"), 1000);
      expect(await inv.heartbeat("b", { load: 0.5, instanceCount: 2, latencyMs: 3 }, 20_000)).toBe(true);
      expect(await inv.heartbeat("ghost", { load: 0, instanceCount: 0, latencyMs: 0 }, 20_000)).toBe(false);
      expect(await inv.markDownMissedHeartbeats(31_000, 15_000)).toEqual(["a"]);
      expect(await inv.markDownMissedHeartbeats(31_000, 15_000)).toEqual([]);
      expect((await inv.list()).map((h) => [h.hostId, h.up])).toEqual([["a", false], ["b", true]]);
      // A down host cannot be claimed on, and the scheduler does not pick it.
      expect(await inv.claim("a", { vcpus: 1, memoryMib: 1, diskGib: 1 }, "x")).toBe(false);
      const p = await new ClaimingScheduler(inv).schedule({ resources: { vcpus: 1, memoryMib: 1, diskGib: 1 }, hypervisor: QEMU, features: [], region: "" }, "vm");
      expect(p.hostId).toBe("b");
      // A late, out-of-order heartbeat does not move last_heartbeat back.
      await inv.heartbeat("a", { load: 0, instanceCount: 0, latencyMs: 1, hypervisors: [] }, 32_000);
      await inv.heartbeat("a", { load: 0, instanceCount: 0, latencyMs: 1 }, 10_000);
      expect(await inv.get("a")).toMatchObject({ up: true, lastHeartbeatMs: 32_000, hypervisors: [] });
    });

    it("claims check every resource with its ratio; claim ids are idempotent; release gives back once", async () => {
      await inv.register(reg("h"), 0);
      expect(await inv.claim("h", { vcpus: 9, memoryMib: 1, diskGib: 1 }, "cpu")).toBe(false); // 9 > 2 × 4
      expect(await inv.claim("h", { vcpus: 8, memoryMib: 4097, diskGib: 1 }, "ram")).toBe(false);
      expect(await inv.claim("h", { vcpus: 8, memoryMib: 4096, diskGib: 101 }, "disk")).toBe(false);
      expect(await inv.claim("nope", { vcpus: 1, memoryMib: 1, diskGib: 1 }, "unknown")).toBe(false);
      expect(await inv.claim("h", { vcpus: 8, memoryMib: 4096, diskGib: 100 }, "full")).toBe(true);
      expect(await inv.claim("h", { vcpus: 8, memoryMib: 4096, diskGib: 100 }, "full")).toBe(true); // retried request
      expect((await inv.get("h"))!.used).toEqual({ vcpus: 8, memoryMib: 4096, diskGib: 100 });
      expect(await inv.claim("h", { vcpus: 1, memoryMib: 0, diskGib: 0 }, "more")).toBe(false);
      const [r1, r2] = await Promise.all([inv.release("full"), inv.release("full")]);
      expect([r1, r2].filter(Boolean)).toHaveLength(1);
      expect(await inv.release("full")).toBe(false);
      expect((await inv.get("h"))!.used).toEqual({ vcpus: 0, memoryMib: 0, diskGib: 0 });
      await expect(inv.claim("h", { vcpus: 1.5, memoryMib: 0, diskGib: 0 }, "frac")).rejects.toMatchObject({ reason: "INVALID_ARGUMENT" });
    });

    async function verifyNoOvercommit(hostIds: string[]): Promise<number> {
      const claimed = await inv.claimedPerHost();
      let total = 0;
      for (const id of hostIds) {
        const h = (await inv.get(id))!;
        const c = claimed.get(id) ?? { vcpus: 0, memoryMib: 0, diskGib: 0 };
        expect(h.used, id).toEqual(c);
        expect(h.used.vcpus, id).toBeLessThanOrEqual(h.total.vcpus * h.ratios.cpu);
        expect(h.used.memoryMib, id).toBeLessThanOrEqual(h.total.memoryMib * h.ratios.ram);
        expect(h.used.diskGib, id).toBeLessThanOrEqual(h.total.diskGib * h.ratios.disk);
        total += h.used.vcpus;
      }
      return total;
    }

    it("100 concurrent claims on 20 hosts never over-commit a host", async () => {
      const ids = Array.from({ length: 20 }, (_, i) => `host-${String(i).padStart(2, "0")}`);
      for (const id of ids) await inv.register(reg(id), 0);
      // 5 claims per host, 3 vCPUs each: 2 fit in 8 schedulable vCPUs, a third would over-commit.
      const outcomes = await Promise.all(
        Array.from({ length: 100 }, (_, i) => inv.claim(ids[i % 20]!, { vcpus: 3, memoryMib: 512, diskGib: 10 }, `vm-${i}`)),
      );
      expect(outcomes.filter(Boolean)).toHaveLength(40);
      expect(await verifyNoOvercommit(ids)).toBe(40 * 3);
    });

    it("100 concurrent creates through the scheduler on 20 hosts: no over-commit, failures only when full", async () => {
      const ids = Array.from({ length: 20 }, (_, i) => `host-${String(i).padStart(2, "0")}`);
      for (const [i, id] of ids.entries()) await inv.register(reg(id, { load: (i % 5) / 10, latencyMs: i % 3 }), 0);
      const sched = new ClaimingScheduler(inv);
      const req = { resources: { vcpus: 3, memoryMib: 1024, diskGib: 10 }, hypervisor: QEMU, features: [], region: "eu-1" };
      const outcomes = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => sched.schedule(req, `vm-${i}`)));
      const ok = outcomes.filter((o) => o.status === "fulfilled");
      const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected");
      // Capacity is 2 such VMs per host (CPU-bound): exactly 40 fit, the rest are refused.
      expect(ok).toHaveLength(40);
      for (const f of failed) expect(f.reason).toMatchObject({ status: "RESOURCE_EXHAUSTED", reason: "NO_VALID_HOST" });
      expect(failed.some((f) => /CoreFilter removed 20/.test((f.reason as Error).message))).toBe(true);
      expect(await verifyNoOvercommit(ids)).toBe(40 * 3);
    });
  });
}

describe("MemoryHostInventory keeps the same claim contract", () => {
  it("100 concurrent claims on 20 hosts: 2 per host fit, none over-commits; releases are idempotent", async () => {
    const inv = new MemoryHostInventory();
    const ids = Array.from({ length: 20 }, (_, i) => `host-${i}`);
    for (const id of ids) await inv.register(reg(id), 0);
    const snapshot = await inv.list();
    const outcomes = await Promise.all(Array.from({ length: 100 }, (_, i) => inv.claim(ids[i % 20]!, { vcpus: 3, memoryMib: 512, diskGib: 10 }, `vm-${i}`)));
    expect(outcomes.filter(Boolean)).toHaveLength(40);
    for (const id of ids) expect((await inv.get(id))!.used).toEqual({ vcpus: 6, memoryMib: 1024, diskGib: 20 });
    // A snapshot handed out before the claims does not change under its reader.
    expect(snapshot.every((h) => h.used.vcpus === 0)).toBe(true);
    expect(await inv.claim("host-0", { vcpus: 3, memoryMib: 512, diskGib: 10 }, "vm-0")).toBe(true); // same id, same host
    expect(await inv.claim("host-1", { vcpus: 1, memoryMib: 1, diskGib: 1 }, "vm-0")).toBe(false); // same id, other host
    expect(await inv.release("vm-0")).toBe(true);
    expect(await inv.release("vm-0")).toBe(false);
    expect((await inv.get("host-0"))!.used.vcpus).toBe(3);
  });
});

describe("CachedHostInventory over the SQL inventory (SQLite)", () => {
  const backend = sqliteBackend();
  afterAll(() => backend.cleanup());

  it("serves list() from memory, keeps it current for its own writes, reloads when old", async () => {
    const db = await openDatabase({ ...(await backend.fresh()), migrations: [vmHostInventory] });
    try {
      const sql = new SqlHostInventory(db);
      let reads = 0;
      const counting = Object.create(sql) as SqlHostInventory;
      counting.list = async () => (reads++, sql.list());
      let now = 0;
      const inv = new CachedHostInventory(counting, 1000, () => now);
      for (const id of ["a", "b"]) await inv.register(reg(id), 0);
      expect((await inv.list()).map((h) => h.hostId)).toEqual(["a", "b"]);
      await inv.list();
      expect(reads).toBe(1);
      expect(await inv.claim("a", { vcpus: 4, memoryMib: 1024, diskGib: 1 }, "c1")).toBe(true);
      expect((await inv.list()).find((h) => h.hostId === "a")!.used.vcpus).toBe(4);
      // Another replica fills b behind our back: our view is stale, the claim still refuses.
      await sql.claim("b", { vcpus: 8, memoryMib: 0, diskGib: 0 }, "elsewhere");
      expect((await inv.list()).find((h) => h.hostId === "b")!.used.vcpus).toBe(0);
      expect(await inv.claim("b", { vcpus: 1, memoryMib: 0, diskGib: 0 }, "c2")).toBe(false);
      expect((await inv.list()).find((h) => h.hostId === "b")!.used.vcpus).toBe(8); // the lost claim refreshed b
      expect(await inv.release("c1")).toBe(true);
      expect((await inv.list()).find((h) => h.hostId === "a")!.used.vcpus).toBe(0);
      expect(await inv.markDownMissedHeartbeats(60_000, 1000)).toEqual(["a", "b"]);
      expect((await inv.list()).every((h) => !h.up)).toBe(true);
      expect(reads).toBe(1);
      now = 1500;
      await inv.list();
      expect(reads).toBe(2);
    } finally {
      await db.close();
    }
  });

  it("100 concurrent creates through the scheduler on a cached view never over-commit", async () => {
    const db = await openDatabase({ ...(await backend.fresh()), migrations: [vmHostInventory] });
    try {
      const sql = new SqlHostInventory(db);
      const inv = new CachedHostInventory(sql, 60_000);
      const ids = Array.from({ length: 20 }, (_, i) => `host-${i}`);
      for (const id of ids) await inv.register(reg(id), 0);
      const sched = new ClaimingScheduler(inv);
      const req = { resources: { vcpus: 3, memoryMib: 1024, diskGib: 10 }, hypervisor: QEMU, features: [], region: "eu-1" };
      const outcomes = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => sched.schedule(req, `vm-${i}`)));
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(40);
      const claimed = await sql.claimedPerHost();
      for (const id of ids) {
        const h = (await sql.get(id))!;
        expect(h.used).toEqual(claimed.get(id));
        expect(h.used.vcpus).toBeLessThanOrEqual(8);
      }
    } finally {
      await db.close();
    }
  });
});
