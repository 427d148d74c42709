// The VM area's later migrations (issue 4). 7: the scheduler's host inventory ("Hosts" and
// atomic claims): one row per host with capacity, ratios, usage and liveness, and one row per
// claim so release is idempotent. 8: the VM list columns. Registered in migrations/index.ts.
import type { Migration } from "../../runtime/storage/migrations/migration.js";

export const vmHostInventory: Migration = {
  id: 7,
  name: "vm-host-inventory",
  statements: (t, dialect) => {
    // Ratios, load and latency are fractional; the shared column map has no float type.
    const real = dialect === "postgres" ? "DOUBLE PRECISION" : "REAL";
    return [
      `CREATE TABLE vm_host_inventory (
        host_id ${t.text} PRIMARY KEY,
        region ${t.text} NOT NULL,
        total_vcpus ${t.bigint} NOT NULL,
        total_memory_mib ${t.bigint} NOT NULL,
        total_disk_gib ${t.bigint} NOT NULL,
        used_vcpus ${t.bigint} NOT NULL DEFAULT 0,
        used_memory_mib ${t.bigint} NOT NULL DEFAULT 0,
        used_disk_gib ${t.bigint} NOT NULL DEFAULT 0,
        cpu_allocation_ratio ${real} NOT NULL,
        ram_allocation_ratio ${real} NOT NULL,
        disk_allocation_ratio ${real} NOT NULL,
        hypervisors_json ${t.text} NOT NULL,
        load ${real} NOT NULL,
        instance_count ${t.bigint} NOT NULL,
        latency_ms ${real} NOT NULL,
        up ${t.flag} NOT NULL,
        last_heartbeat_ms ${t.bigint} NOT NULL
      )`,
      `CREATE INDEX vm_host_inventory_by_heartbeat ON vm_host_inventory(up, last_heartbeat_ms)`,
      `CREATE TABLE vm_host_claims (
        claim_id ${t.text} PRIMARY KEY,
        host_id ${t.text} NOT NULL REFERENCES vm_host_inventory(host_id),
        vcpus ${t.bigint} NOT NULL,
        memory_mib ${t.bigint} NOT NULL,
        disk_gib ${t.bigint} NOT NULL,
        created_at_ms ${t.bigint} NOT NULL
      )`,
      `CREATE INDEX vm_host_claims_by_host ON vm_host_claims(host_id)`,
    ];
  },
};

// Migration 8 (issue 4, ListVms filters and non-state updates): the columns ListVms filters on
// beside the record, so region and hypervisor filter inside the paged query (not after it), and
// a revision every write bumps, so a volume or network change races safely with a state change.
// Rows written before it carry '' / 0 until VmRepository.backfill() copies them from the record.
export const vmListColumns: Migration = {
  id: 8,
  name: "vm-list-columns",
  statements: (t) => [
    `ALTER TABLE vms ADD COLUMN region ${t.text} NOT NULL DEFAULT ''`,
    `ALTER TABLE vms ADD COLUMN hypervisor ${t.bigint} NOT NULL DEFAULT 0`,
    `ALTER TABLE vms ADD COLUMN revision ${t.bigint} NOT NULL DEFAULT 0`,
    `CREATE INDEX vms_by_region ON vms(region, vm_id)`,
    `CREATE INDEX vms_by_hypervisor ON vms(hypervisor, vm_id)`,
  ],
};
