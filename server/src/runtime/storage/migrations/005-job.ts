// Migration 5: the secure-jobs area (seed 003) — hosted objects (tenant, name) → blob digest
// of envelope ciphertext, and job records. Neither table ever holds a key or plaintext.
import type { Migration } from "./migration.js";

export const job: Migration = {
  id: 5,
  name: "job",
  statements: (t) => [
    `CREATE TABLE job_objects (
      tenant ${t.text} NOT NULL,
      name ${t.text} NOT NULL,
      digest ${t.text} NOT NULL,
      size ${t.bigint} NOT NULL,
      created_by ${t.text} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      PRIMARY KEY (tenant, name)
    )`,
    `CREATE INDEX job_objects_by_digest ON job_objects(digest)`,
    `CREATE TABLE jobs (
      job_id ${t.text} PRIMARY KEY,
      owner ${t.text} NOT NULL,
      session_id ${t.text} NOT NULL,
      state ${t.bigint} NOT NULL,
      failure_reason ${t.text} NOT NULL,
      code_sha256 ${t.text} NOT NULL,
      data_json ${t.text} NOT NULL,
      result_json ${t.text} NOT NULL,
      result_mode ${t.bigint} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      updated_at_ms ${t.bigint} NOT NULL
    )`,
  ],
};
