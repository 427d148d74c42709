// VM records on SQLite and PostgreSQL: compare-and-set state changes (two racers, one wins),
// revision read-modify-writes (concurrent changes all land), keyset paging with every filter
// in the query, the migration-8 backfill, and the event log that WatchVmEvents resumes from.
import { afterAll, describe, expect, it } from "vitest";
import { HypervisorType, Vm, VmEventType, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { VmRepository } from "../../server/src/vm/manager/vm-repository.js";
import { backends } from "../support/backends.js";

const vm = (vmId: string, owner: string, state = VmState.VM_STATE_SCHEDULED) =>
  Vm.fromPartial({ vmId, owner, name: vmId, image: "process", state, hostId: "h1", createdAtMs: 1, updatedAtMs: 1 });

describe.each(backends())("VM repository on $name", (backend) => {
  afterAll(() => backend.cleanup());

  it("changes state only from the expected state, so one of two racers wins", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      const repo = new VmRepository(s.db);
      await repo.create(vm("vm-a", "alice"));
      await expect(repo.create(vm("vm-a", "alice"))).rejects.toMatchObject({ status: "ALREADY_EXISTS" });
      const results = await Promise.all([
        repo.compareAndSet(VmState.VM_STATE_SCHEDULED, { ...vm("vm-a", "alice"), state: VmState.VM_STATE_STARTING }),
        repo.compareAndSet(VmState.VM_STATE_SCHEDULED, { ...vm("vm-a", "alice"), state: VmState.VM_STATE_TERMINATING }),
      ]);
      expect(results.filter(Boolean)).toHaveLength(1);
      expect([VmState.VM_STATE_STARTING, VmState.VM_STATE_TERMINATING]).toContain((await repo.get("vm-a"))!.state);
    } finally {
      await s.close();
    }
  });

  it("pages by id and scopes by owner and state", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      const repo = new VmRepository(s.db);
      for (const id of ["vm-3", "vm-1", "vm-2"]) await repo.create(vm(id, "alice"));
      await repo.create(vm("vm-9", "bob", VmState.VM_STATE_RUNNING));
      const p1 = await repo.list({ owner: "alice", pageSize: 2 });
      expect(p1.items.map((v) => v.vmId)).toEqual(["vm-1", "vm-2"]);
      const p2 = await repo.list({ owner: "alice", pageSize: 2, pageToken: p1.nextPageToken });
      expect(p2.items.map((v) => v.vmId)).toEqual(["vm-3"]);
      expect((await repo.list({ pageSize: 10, state: VmState.VM_STATE_RUNNING })).items.map((v) => v.vmId)).toEqual(["vm-9"]);
    } finally {
      await s.close();
    }
  });

  it("read-modify-writes under the revision: concurrent volume changes all land", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      const repo = new VmRepository(s.db);
      await repo.create(vm("vm-r", "alice", VmState.VM_STATE_RUNNING));
      let asked = 0;
      const add = (volumeId: string) =>
        repo.update("vm-r", (cur) => {
          asked++;
          return { ...cur, volumes: [...cur.volumes, { volumeId, sizeGib: 1, readOnly: false }] };
        });
      await Promise.all(["a", "b", "c", "d"].map(add));
      expect((await repo.get("vm-r"))!.volumes.map((v) => v.volumeId).sort()).toEqual(["a", "b", "c", "d"]);
      expect(asked).toBeGreaterThanOrEqual(4);
      expect(await repo.update("vm-missing", (cur) => cur)).toBeUndefined();
    } finally {
      await s.close();
    }
  });

  it("filters by hypervisor and region in the query, and backfills rows written before those columns", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      const repo = new VmRepository(s.db);
      for (let i = 0; i < 6; i++) await repo.create({ ...vm(`vm-${i}`, "alice"), hypervisor: i % 2 ? HypervisorType.HYPERVISOR_TYPE_QEMU : HypervisorType.HYPERVISOR_TYPE_SANDBOX, region: i < 3 ? "eu-1" : "us-1" });
      const p1 = await repo.list({ pageSize: 2, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU });
      expect(p1.items.map((v) => v.vmId)).toEqual(["vm-1", "vm-3"]);
      expect((await repo.list({ pageSize: 2, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, pageToken: p1.nextPageToken })).items.map((v) => v.vmId)).toEqual(["vm-5"]);
      expect((await repo.list({ pageSize: 10, region: "us-1", hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX })).items.map((v) => v.vmId)).toEqual(["vm-4"]);
      // A row from before migration 8: columns at their defaults, the record knows better.
      await s.db.run("UPDATE vms SET hypervisor = 0, region = '' WHERE vm_id = ?", ["vm-5"]);
      expect((await repo.list({ pageSize: 10, region: "us-1" })).items.map((v) => v.vmId)).toEqual(["vm-3", "vm-4"]);
      expect(await repo.backfill()).toBe(1);
      expect((await repo.list({ pageSize: 10, region: "us-1" })).items.map((v) => v.vmId)).toEqual(["vm-3", "vm-4", "vm-5"]);
    } finally {
      await s.close();
    }
  });

  it("keeps an ordered event log to resume from", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      const repo = new VmRepository(s.db);
      const e1 = await repo.appendEvent("alice", { vmId: "vm-1", type: VmEventType.VM_EVENT_TYPE_DEFINED, detail: "a", initiator: "alice", state: VmState.VM_STATE_SCHEDULED, timeMs: 1 });
      const e2 = await repo.appendEvent("bob", { vmId: "vm-2", type: VmEventType.VM_EVENT_TYPE_STARTED, detail: "b", initiator: "bob", state: VmState.VM_STATE_RUNNING, timeMs: 2 });
      expect(e2.seq).toBeGreaterThan(e1.seq);
      expect((await repo.eventsAfter(e1.seq, {})).map((e) => e.detail)).toEqual(["b"]);
      expect((await repo.eventsAfter(0, { owner: "alice" })).map((e) => e.vmId)).toEqual(["vm-1"]);
      expect(await repo.lastEventSeq()).toBe(e2.seq);
    } finally {
      await s.close();
    }
  });
});
