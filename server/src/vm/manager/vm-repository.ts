// VM records (the encoded Vm message beside the columns ListVms filters on) and their event
// log. Every write bumps a revision and `update` writes only over the revision it read, so two
// writers racing on one VM (replicas, a user and a host report) never overwrite each other.
import { randomUUID } from "node:crypto";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Vm, VmEvent, type HypervisorType, type VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { isUniqueViolation, type SqlDb } from "../../runtime/storage/sql-db.js";

export interface VmListFilter {
  /** Undefined lists every owner's VMs. */
  owner?: string;
  state?: VmState;
  hostId?: string;
  hypervisor?: HypervisorType;
  region?: string;
}

const encode = (vm: Vm) => Buffer.from(Vm.encode(vm).finish());

export class VmRepository {
  constructor(private readonly db: SqlDb) {}

  async create(vm: Vm): Promise<void> {
    try {
      await this.db.run("INSERT INTO vms (vm_id, owner, state, host_id, region, hypervisor, revision, record, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)", [
        vm.vmId,
        vm.owner,
        vm.state,
        vm.hostId,
        vm.region,
        vm.hypervisor,
        encode(vm),
        vm.createdAtMs,
        vm.updatedAtMs,
      ]);
    } catch (e) {
      if (isUniqueViolation(e)) throw new TrustplaneError("ALREADY_EXISTS", "VM_EXISTS", `VM ${vm.vmId} already exists`, "vm_id");
      throw e;
    }
  }

  /** Copies region and hypervisor out of records written before those columns existed (migration 8). */
  async backfill(): Promise<number> {
    const rows = await this.db.all<{ vm_id: string; record: Buffer }>("SELECT vm_id, record FROM vms WHERE hypervisor = 0");
    let n = 0;
    for (const r of rows) {
      const vm = Vm.decode(r.record);
      if (!vm.hypervisor) continue;
      n += (await this.db.run("UPDATE vms SET region = ?, hypervisor = ? WHERE vm_id = ? AND hypervisor = 0", [vm.region, vm.hypervisor, r.vm_id])).changes;
    }
    return n;
  }

  async get(vmId: string): Promise<Vm | undefined> {
    const r = await this.db.get<{ record: Buffer }>("SELECT record FROM vms WHERE vm_id = ?", [vmId]);
    return r && Vm.decode(r.record);
  }

  private write(next: Vm, where: string, params: unknown[]): Promise<{ changes: number }> {
    return this.db.run(`UPDATE vms SET state = ?, host_id = ?, region = ?, hypervisor = ?, record = ?, updated_at_ms = ?, revision = revision + 1 WHERE vm_id = ? AND ${where}`, [
      next.state,
      next.hostId,
      next.region,
      next.hypervisor,
      encode(next),
      next.updatedAtMs,
      next.vmId,
      ...params,
    ]);
  }

  /** Writes `next` only if the stored state is still `expected`; returns whether it did. */
  async compareAndSet(expected: VmState, next: Vm): Promise<boolean> {
    return (await this.write(next, "state = ?", [expected])).changes === 1;
  }

  /**
   * Read-modify-write under the record's revision: `change` sees the stored record and returns
   * the next one (or undefined: nothing to write); a write that lost a race re-reads and asks
   * `change` again, so it always decides on what is stored. Undefined when the VM does not exist
   * or `change` declined.
   */
  async update(vmId: string, change: (current: Vm) => Vm | undefined, attempts = 10): Promise<Vm | undefined> {
    for (let i = 0; i < attempts; i++) {
      const r = await this.db.get<{ record: Buffer; revision: number }>("SELECT record, revision FROM vms WHERE vm_id = ?", [vmId]);
      if (!r) return undefined;
      const next = change(Vm.decode(r.record));
      if (!next) return undefined;
      if ((await this.write(next, "revision = ?", [Number(r.revision)])).changes === 1) return next;
    }
    throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `VM ${vmId} kept changing while being updated (${attempts} attempts); retry`, "vm_id");
  }

  /** Keyset-paged by vm id, every filter inside the query so a page is never short. */
  async list(opts: VmListFilter & { pageSize: number; pageToken?: string }): Promise<{ items: Vm[]; nextPageToken?: string }> {
    const where = ["vm_id > ?"];
    const params: unknown[] = [opts.pageToken ?? ""];
    if (opts.owner !== undefined) (where.push("owner = ?"), params.push(opts.owner));
    if (opts.state) (where.push("state = ?"), params.push(opts.state));
    if (opts.hostId) (where.push("host_id = ?"), params.push(opts.hostId));
    if (opts.hypervisor) (where.push("hypervisor = ?"), params.push(opts.hypervisor));
    if (opts.region) (where.push("region = ?"), params.push(opts.region));
    const size = Math.max(1, Math.min(opts.pageSize || 100, 1000));
    const rows = await this.db.all<{ record: Buffer }>(`SELECT record FROM vms WHERE ${where.join(" AND ")} ORDER BY vm_id LIMIT ?`, [...params, size + 1]);
    const items = rows.slice(0, size).map((r) => Vm.decode(r.record));
    return { items, nextPageToken: rows.length > size ? items[items.length - 1]!.vmId : undefined };
  }

  async appendEvent(owner: string, e: Omit<VmEvent, "seq">): Promise<VmEvent> {
    const eventId = randomUUID();
    await this.db.run("INSERT INTO vm_events (event_id, vm_id, owner, record) VALUES (?, ?, ?, ?)", [eventId, e.vmId, owner, Buffer.from(VmEvent.encode({ ...e, seq: 0 }).finish())]);
    const row = await this.db.get<{ seq: number }>("SELECT seq FROM vm_events WHERE event_id = ?", [eventId]);
    return { ...e, seq: Number(row!.seq) };
  }

  async lastEventSeq(): Promise<number> {
    const r = await this.db.get<{ seq: number | null }>("SELECT MAX(seq) AS seq FROM vm_events");
    return Number(r?.seq ?? 0);
  }

  async eventsAfter(afterSeq: number, filter: { vmId?: string; owner?: string }, limit = 500): Promise<VmEvent[]> {
    const where = ["seq > ?"];
    const params: unknown[] = [afterSeq];
    if (filter.vmId) (where.push("vm_id = ?"), params.push(filter.vmId));
    if (filter.owner !== undefined) (where.push("owner = ?"), params.push(filter.owner));
    const rows = await this.db.all<{ seq: number; record: Buffer }>(`SELECT seq, record FROM vm_events WHERE ${where.join(" AND ")} ORDER BY seq LIMIT ?`, [...params, limit]);
    return rows.map((r) => ({ ...VmEvent.decode(r.record), seq: Number(r.seq) }));
  }
}
