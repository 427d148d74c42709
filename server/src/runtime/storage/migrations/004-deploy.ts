// Migration 4: the deploy server's records — deployments (the Deployment message, encoded,
// plus the columns queries filter on), their stage log, and the domain tables post-processors
// write for a stored deployment (roles, docs, metadata), scoped by the AAC triplet.
import type { Migration } from "./migration.js";

export const deploy: Migration = {
  id: 4,
  name: "deploy",
  statements: (t, dialect) => [
    `CREATE TABLE deployments (
      operation_id ${t.text} PRIMARY KEY,
      account ${t.text} NOT NULL,
      application ${t.text} NOT NULL,
      component ${t.text} NOT NULL,
      status ${t.bigint} NOT NULL,
      record ${t.bytes} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      updated_at_ms ${t.bigint} NOT NULL
    )`,
    `CREATE INDEX deployments_by_aac ON deployments(account, application, component, created_at_ms)`,
    dialect === "postgres"
      ? `CREATE TABLE deployment_stages (seq BIGSERIAL PRIMARY KEY, stage_id TEXT NOT NULL UNIQUE, operation_id TEXT NOT NULL, record BYTEA NOT NULL)`
      : `CREATE TABLE deployment_stages (seq INTEGER PRIMARY KEY AUTOINCREMENT, stage_id TEXT NOT NULL UNIQUE, operation_id TEXT NOT NULL, record BLOB NOT NULL)`,
    `CREATE INDEX deployment_stages_by_op ON deployment_stages(operation_id, seq)`,
    `CREATE TABLE deploy_roles (
      account ${t.text} NOT NULL, application ${t.text} NOT NULL, component ${t.text} NOT NULL,
      operation_id ${t.text} NOT NULL, name ${t.text} NOT NULL, description ${t.text} NOT NULL,
      PRIMARY KEY (account, application, component, name)
    )`,
    `CREATE TABLE deploy_docs (
      account ${t.text} NOT NULL, application ${t.text} NOT NULL, component ${t.text} NOT NULL,
      operation_id ${t.text} NOT NULL, file ${t.text} NOT NULL, title ${t.text} NOT NULL, headings_json ${t.text} NOT NULL,
      PRIMARY KEY (account, application, component, file)
    )`,
    `CREATE TABLE deploy_metadata (
      account ${t.text} NOT NULL, application ${t.text} NOT NULL, component ${t.text} NOT NULL,
      operation_id ${t.text} NOT NULL, meta_key ${t.text} NOT NULL, meta_value ${t.text} NOT NULL,
      PRIMARY KEY (account, application, component, meta_key)
    )`,
  ],
};
