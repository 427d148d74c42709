// VM scheduler benchmark (issue 4 "Performance"): scheduling one VM — inventory snapshot,
// filters, normalised weighers, top-k alternates and the atomic claim — over 10,000 registered
// hosts, on the in-memory inventory and on the server's path (cached view over SQLite claims);
// p99 must stay under the 10 ms target.
import { cpus, loadavg, tmpdir } from "node:os";
import { performance } from "node:perf_hooks";
import { Feature, HypervisorType } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { MemoryHostInventory } from "../../server/src/vm/manager/host-inventory-memory.js";
import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import { CachedHostInventory } from "../../server/src/vm/manager/host-inventory-cache.js";
import { SqlHostInventory } from "../../server/src/vm/manager/host-inventory-sql.js";
import type { HostInventory, HypervisorOffer } from "../../server/src/vm/manager/host-inventory.js";
import { vmHostInventory } from "../../server/src/vm/manager/vm-migration.js";
import { ClaimingScheduler } from "../../server/src/vm/scheduler/claiming-scheduler.js";
import type { SchedulingRequest } from "../../server/src/vm/scheduler/host-filters.js";
import { median, percentile, result, type Benchmark } from "../harness.js";

const HOSTS = 10_000;
const WARMUP = 200;
const SAMPLES = 2_000;
const TARGET_P99_MS = 10;

const QEMU: HypervisorOffer = { hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_MEMORY_INSPECTION], accelerator: "kvm", cost: 4 };
const SANDBOX: HypervisorOffer = { hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, features: [Feature.FEATURE_FAST_START], accelerator: "none", cost: 1 };

/** A varied fleet: 4 regions, mixed drivers, sizes, load, latency and some hosts down. */
async function fleet<T extends HostInventory>(inv: T): Promise<T> {
  for (let i = 0; i < HOSTS; i++) {
    await inv.register(
      {
        hostId: `host-${String(i).padStart(5, "0")}`,
        region: `region-${i % 4}`,
        total: { vcpus: 16 + (i % 4) * 16, memoryMib: 65536 + (i % 8) * 32768, diskGib: 500 + (i % 5) * 250 },
        hypervisors: i % 3 === 0 ? [SANDBOX] : [QEMU, SANDBOX],
        load: ((i * 7919) % 1000) / 1000,
        instanceCount: (i * 31) % 40,
        latencyMs: 0.5 + ((i * 17) % 100) / 10,
      },
      0,
    );
  }
  // 2% of the fleet missed its heartbeats.
  for (let i = 0; i < HOSTS; i += 50) await inv.heartbeat(`host-${String(i).padStart(5, "0")}`, { load: 0, instanceCount: 0, latencyMs: 1 }, 0);
  await inv.markDownMissedHeartbeats(1, 0);
  for (let i = 0; i < HOSTS; i++) if (i % 50 !== 0) await inv.heartbeat(`host-${String(i).padStart(5, "0")}`, { load: ((i * 7919) % 1000) / 1000, instanceCount: (i * 31) % 40, latencyMs: 0.5 + ((i * 17) % 100) / 10 }, 2);
  return inv;
}

const REQUESTS: SchedulingRequest[] = [
  { resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, features: [Feature.FEATURE_BLOCK_HOTPLUG], region: "region-1" },
  { resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, features: [], region: "" },
  { resources: { vcpus: 8, memoryMib: 32768, diskGib: 100 }, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, features: [], region: "region-2" },
];

/** Schedules WARMUP + SAMPLES VMs and reports the p99 wall time against the 10 ms target. */
async function measure(name: string, inv: HostInventory, what: string) {
  const sched = new ClaimingScheduler(inv);
  const times: number[] = [];
  // CPU time per schedule too: on a shared 2-core machine wall-clock tails are mostly preemption.
  const cpu: number[] = [];
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    const c0 = process.cpuUsage();
    const t = performance.now();
    // Claims are kept (not released): the fleet fills as it would under real creates.
    await sched.schedule(REQUESTS[i % REQUESTS.length]!, `vm-${i}`);
    const ms = performance.now() - t;
    const c = process.cpuUsage(c0);
    if (i >= WARMUP) {
      times.push(ms);
      cpu.push((c.user + c.system) / 1000);
    }
  }
  times.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  return result({
    name,
    value: percentile(times, 99),
    unit: "ms",
    baseline: TARGET_P99_MS,
    target: 1.0,
    lowerIsBetter: true,
    note: `p50 ${median(times).toFixed(3)} ms, max ${times[times.length - 1]!.toFixed(3)} ms, CPU-time p99 ${percentile(cpu, 99).toFixed(3)} ms over ${SAMPLES} schedules, ${HOSTS} hosts (${what}), load avg ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores`,
  });
}

export const VM_SCHEDULER_BENCHMARKS: Benchmark[] = [
  {
    name: "vm.scheduler",
    description: `schedule + claim one VM over ${HOSTS.toLocaleString("en")} hosts (filters, normalised weighers, alternates), p99 vs 10 ms`,
    async run() {
      const memory = await measure("vm.scheduler.p99", await fleet(new MemoryHostInventory()), "in-memory inventory");
      // The server's real path: a cached view (1 s) over the SQLite inventory, claims in SQL.
      const dir = mkdtempSync(path.join(tmpdir(), "tp-sched-bench-"));
      const db = await openDatabase({ sqlitePath: path.join(dir, "bench.db"), migrations: [vmHostInventory] });
      try {
        const sql = new SqlHostInventory(db);
        await db.transaction(() => fleet(sql));
        const cached = await measure("vm.scheduler.sqlite-cached.p99", new CachedHostInventory(sql, 1000), "SQLite claims, 1 s cached view");
        return [memory, cached];
      } finally {
        await db.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
];
