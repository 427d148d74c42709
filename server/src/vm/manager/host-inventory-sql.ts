// The host inventory over the shared SqlDb (SQLite or PostgreSQL; tables from vm-migration.ts).
// A claim is one conditional UPDATE (used + requested ≤ total × ratio, host up) inside the
// transaction that records the claim row: the database, not the caller, decides who fits.
import type { SqlDb } from "../../runtime/storage/sql-db.js";
import type { HostHeartbeat, HostInventory, HostRegistration, HostState, HypervisorOffer, ResourceAmounts } from "./host-inventory.js";
import { checkAmounts, resolveRatios } from "./host-inventory.js";

interface Row {
  host_id: string;
  region: string;
  total_vcpus: number;
  total_memory_mib: number;
  total_disk_gib: number;
  used_vcpus: number;
  used_memory_mib: number;
  used_disk_gib: number;
  cpu_allocation_ratio: number;
  ram_allocation_ratio: number;
  disk_allocation_ratio: number;
  hypervisors_json: string;
  load: number;
  instance_count: number;
  latency_ms: number;
  up: number;
  last_heartbeat_ms: number;
}

const fromRow = (r: Row): HostState => ({
  hostId: r.host_id,
  region: r.region,
  total: { vcpus: Number(r.total_vcpus), memoryMib: Number(r.total_memory_mib), diskGib: Number(r.total_disk_gib) },
  used: { vcpus: Number(r.used_vcpus), memoryMib: Number(r.used_memory_mib), diskGib: Number(r.used_disk_gib) },
  ratios: { cpu: Number(r.cpu_allocation_ratio), ram: Number(r.ram_allocation_ratio), disk: Number(r.disk_allocation_ratio) },
  hypervisors: JSON.parse(r.hypervisors_json) as HypervisorOffer[],
  load: Number(r.load),
  instanceCount: Number(r.instance_count),
  latencyMs: Number(r.latency_ms),
  up: Number(r.up) === 1,
  lastHeartbeatMs: Number(r.last_heartbeat_ms),
});

/** Thrown inside the claim transaction to roll back the claim row when the host does not fit. */
class ClaimDoesNotFit extends Error {}

export class SqlHostInventory implements HostInventory {
  constructor(private readonly db: SqlDb) {}

  async register(reg: HostRegistration, nowMs: number): Promise<HostState> {
    checkAmounts("total", reg.total);
    const ratios = resolveRatios(reg.ratios);
    // used_* are left out of the update: the server's claims survive an agent re-registering.
    await this.db.run(
      `INSERT INTO vm_host_inventory (host_id, region, total_vcpus, total_memory_mib, total_disk_gib,
         cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio, hypervisors_json, load, instance_count,
         latency_ms, up, last_heartbeat_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
       ON CONFLICT (host_id) DO UPDATE SET region = excluded.region, total_vcpus = excluded.total_vcpus,
         total_memory_mib = excluded.total_memory_mib, total_disk_gib = excluded.total_disk_gib,
         cpu_allocation_ratio = excluded.cpu_allocation_ratio, ram_allocation_ratio = excluded.ram_allocation_ratio,
         disk_allocation_ratio = excluded.disk_allocation_ratio, hypervisors_json = excluded.hypervisors_json,
         load = excluded.load, instance_count = excluded.instance_count, latency_ms = excluded.latency_ms,
         up = 1, last_heartbeat_ms = excluded.last_heartbeat_ms`,
      [
        reg.hostId, reg.region, reg.total.vcpus, reg.total.memoryMib, reg.total.diskGib,
        ratios.cpu, ratios.ram, ratios.disk, JSON.stringify(reg.hypervisors), reg.load ?? 0, reg.instanceCount ?? 0,
        reg.latencyMs ?? 0, nowMs,
      ],
    );
    return (await this.get(reg.hostId))!;
  }

  async heartbeat(hostId: string, hb: HostHeartbeat, nowMs: number): Promise<boolean> {
    const { changes } = hb.hypervisors
      ? await this.db.run(
          `UPDATE vm_host_inventory SET load = ?, instance_count = ?, latency_ms = ?, hypervisors_json = ?, up = 1,
             last_heartbeat_ms = CASE WHEN last_heartbeat_ms > ? THEN last_heartbeat_ms ELSE ? END WHERE host_id = ?`,
          [hb.load, hb.instanceCount, hb.latencyMs, JSON.stringify(hb.hypervisors), nowMs, nowMs, hostId],
        )
      : await this.db.run(
          `UPDATE vm_host_inventory SET load = ?, instance_count = ?, latency_ms = ?, up = 1,
             last_heartbeat_ms = CASE WHEN last_heartbeat_ms > ? THEN last_heartbeat_ms ELSE ? END WHERE host_id = ?`,
          [hb.load, hb.instanceCount, hb.latencyMs, nowMs, nowMs, hostId],
        );
    return changes === 1;
  }

  async markDownMissedHeartbeats(nowMs: number, graceMs: number): Promise<string[]> {
    const cutoff = nowMs - graceMs;
    const stale = await this.db.all<{ host_id: string }>(
      "SELECT host_id FROM vm_host_inventory WHERE up = 1 AND last_heartbeat_ms < ? ORDER BY host_id",
      [cutoff],
    );
    const down: string[] = [];
    // One conditional update per host: a heartbeat that lands in between keeps its host up.
    for (const { host_id } of stale) {
      const { changes } = await this.db.run("UPDATE vm_host_inventory SET up = 0 WHERE host_id = ? AND up = 1 AND last_heartbeat_ms < ?", [host_id, cutoff]);
      if (changes === 1) down.push(host_id);
    }
    return down;
  }

  async get(hostId: string): Promise<HostState | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM vm_host_inventory WHERE host_id = ?", [hostId]);
    return r && fromRow(r);
  }

  async list(): Promise<readonly HostState[]> {
    return (await this.db.all<Row>("SELECT * FROM vm_host_inventory ORDER BY host_id")).map(fromRow);
  }

  async claim(hostId: string, amounts: ResourceAmounts, claimId: string): Promise<boolean> {
    checkAmounts("resources", amounts);
    try {
      return await this.db.transaction(async (tx) => {
        // The casts: PostgreSQL cannot infer parameter types in a SELECT list.
        const inserted = await tx.run(
          `INSERT INTO vm_host_claims (claim_id, host_id, vcpus, memory_mib, disk_gib, created_at_ms)
           SELECT CAST(? AS TEXT), host_id, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT)
           FROM vm_host_inventory WHERE host_id = ?
           ON CONFLICT (claim_id) DO NOTHING`,
          [claimId, amounts.vcpus, amounts.memoryMib, amounts.diskGib, Date.now(), hostId],
        );
        if (inserted.changes === 0) {
          // Either the host is unknown or this claim id is already held (a retried request).
          const held = await tx.get<{ host_id: string }>("SELECT host_id FROM vm_host_claims WHERE claim_id = ?", [claimId]);
          return held?.host_id === hostId;
        }
        // The one statement that decides: concurrent claims serialise on the host's row and
        // each re-evaluates the condition against the row as the previous winner left it.
        const { changes } = await tx.run(
          `UPDATE vm_host_inventory SET used_vcpus = used_vcpus + ?, used_memory_mib = used_memory_mib + ?,
             used_disk_gib = used_disk_gib + ?
           WHERE host_id = ? AND up = 1
             AND used_vcpus + ? <= total_vcpus * cpu_allocation_ratio
             AND used_memory_mib + ? <= total_memory_mib * ram_allocation_ratio
             AND used_disk_gib + ? <= total_disk_gib * disk_allocation_ratio`,
          [amounts.vcpus, amounts.memoryMib, amounts.diskGib, hostId, amounts.vcpus, amounts.memoryMib, amounts.diskGib],
        );
        if (changes !== 1) throw new ClaimDoesNotFit();
        return true;
      });
    } catch (e) {
      if (e instanceof ClaimDoesNotFit) return false;
      throw e;
    }
  }

  async release(claimId: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const held = await tx.get<{ host_id: string; vcpus: number; memory_mib: number; disk_gib: number }>(
        "SELECT host_id, vcpus, memory_mib, disk_gib FROM vm_host_claims WHERE claim_id = ?",
        [claimId],
      );
      if (!held) return false;
      // Only the release whose DELETE removed the row gives the resources back, so two
      // concurrent releases of one claim cannot both decrement.
      const { changes } = await tx.run("DELETE FROM vm_host_claims WHERE claim_id = ?", [claimId]);
      if (changes !== 1) return false;
      await tx.run(
        `UPDATE vm_host_inventory SET used_vcpus = used_vcpus - ?, used_memory_mib = used_memory_mib - ?,
           used_disk_gib = used_disk_gib - ? WHERE host_id = ?`,
        [Number(held.vcpus), Number(held.memory_mib), Number(held.disk_gib), held.host_id],
      );
      return true;
    });
  }

  /** Sum of live claims per host — what `used` must equal (tests and consistency checks). */
  async claimedPerHost(): Promise<Map<string, ResourceAmounts>> {
    const rows = await this.db.all<{ host_id: string; v: number; m: number; d: number }>(
      "SELECT host_id, SUM(vcpus) AS v, SUM(memory_mib) AS m, SUM(disk_gib) AS d FROM vm_host_claims GROUP BY host_id",
    );
    return new Map(rows.map((r) => [r.host_id, { vcpus: Number(r.v), memoryMib: Number(r.m), diskGib: Number(r.d) }]));
  }
}
