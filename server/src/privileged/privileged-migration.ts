// Migration 6 (reserved for the privileged area): which records of each host's privileged audit
// the server has recorded, with their hashes, so at-least-once forwarding from agents appends
// each record to the server's audit log exactly once and a rewritten host record is refused.
import type { Migration } from "../runtime/storage/migrations/migration.js";

export const privileged: Migration = {
  id: 6,
  name: "privileged",
  statements: (t) => [
    `CREATE TABLE privileged_host_audit (
      host_id ${t.text} NOT NULL,
      seq ${t.bigint} NOT NULL,
      hash ${t.bytes} NOT NULL,
      audit_seq ${t.bigint} NOT NULL,
      PRIMARY KEY (host_id, seq)
    )`,
  ],
};
