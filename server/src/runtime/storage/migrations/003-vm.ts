// Migration 3: the VM manager's records — one row per VM (the Vm message, encoded, plus the
// columns queries filter on) and an append-only event log that WatchVmEvents resumes from.
import type { Migration } from "./migration.js";

export const vm: Migration = {
  id: 3,
  name: "vm",
  statements: (t, dialect) => [
    `CREATE TABLE vms (
      vm_id ${t.text} PRIMARY KEY,
      owner ${t.text} NOT NULL,
      state ${t.bigint} NOT NULL,
      host_id ${t.text} NOT NULL,
      record ${t.bytes} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      updated_at_ms ${t.bigint} NOT NULL
    )`,
    `CREATE INDEX vms_by_owner ON vms(owner, vm_id)`,
    `CREATE INDEX vms_by_host ON vms(host_id)`,
    dialect === "postgres"
      ? `CREATE TABLE vm_events (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, vm_id TEXT NOT NULL, owner TEXT NOT NULL, record BYTEA NOT NULL)`
      : `CREATE TABLE vm_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, vm_id TEXT NOT NULL, owner TEXT NOT NULL, record BLOB NOT NULL)`,
    `CREATE INDEX vm_events_by_vm ON vm_events(vm_id, seq)`,
  ],
};
