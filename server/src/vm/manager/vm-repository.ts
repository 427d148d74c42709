// VM records and their event log. A record is the Vm message itself (encoded), so the stored
// shape evolves with the API; state changes are compare-and-set on the previous state, so two
// replicas (or a user and a host failure) racing on one VM cannot both win.
import { randomUUID } from "node:crypto";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Vm, VmEvent, type VmState } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { isUniqueViolation, type SqlDb } from "../../runtime/storage/sql-db.js";

export class VmRepository {
  constructor(private readonly db: SqlDb) {}

  async create(vm: Vm): Promise<void> {
    try {
      await this.db.run("INSERT INTO vms (vm_id, owner, state, host_id, record, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)", [
        vm.vmId,
        vm.owner,
        vm.state,
        vm.hostId,
        Buffer.from(Vm.encode(vm).finish()),
        vm.createdAtMs,
        vm.updatedAtMs,
      ]);
    } catch (e) {
      if (isUniqueViolation(e)) throw new TrustplaneError("ALREADY_EXISTS", "VM_EXISTS", `VM ${vm.vmId} already exists`, "vm_id");
      throw e;
    }
  }

  async get(vmId: string): Promise<Vm | undefined> {
    const r = await this.db.get<{ record: Buffer }>("SELECT record FROM vms WHERE vm_id = ?", [vmId]);
    return r && Vm.decode(r.record);
  }

  /** Writes `next` only if the stored state is still `expected`; returns whether it did. */
  async compareAndSet(expected: VmState, next: Vm): Promise<boolean> {
    const { changes } = await this.db.run("UPDATE vms SET state = ?, host_id = ?, record = ?, updated_at_ms = ? WHERE vm_id = ? AND state = ?", [
      next.state,
      next.hostId,
      Buffer.from(Vm.encode(next).finish()),
      next.updatedAtMs,
      next.vmId,
      expected,
    ]);
    return changes === 1;
  }

  /** Keyset-paged by vm id; `owner` undefined lists every owner's VMs. */
  async list(opts: { owner?: string; pageSize: number; pageToken?: string; state?: VmState; hostId?: string }): Promise<{ items: Vm[]; nextPageToken?: string }> {
    const where = ["vm_id > ?"];
    const params: unknown[] = [opts.pageToken ?? ""];
    if (opts.owner !== undefined) (where.push("owner = ?"), params.push(opts.owner));
    if (opts.state) (where.push("state = ?"), params.push(opts.state));
    if (opts.hostId) (where.push("host_id = ?"), params.push(opts.hostId));
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
