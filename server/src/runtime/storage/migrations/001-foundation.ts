// Migration 1: the foundation's tables — principals, keys, hosts, join tokens, idempotency
// records, the hash-chained audit log and the shared nonce (replay) cache.
import type { Migration } from "./migration.js";

export const foundation: Migration = {
  id: 1,
  name: "foundation",
  statements: (t) => [
    `CREATE TABLE principals (
      name ${t.text} PRIMARY KEY,
      kind ${t.text} NOT NULL,
      roles_json ${t.text} NOT NULL,
      policy_json ${t.text} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL
    )`,
    `CREATE TABLE keys (
      key_id ${t.text} PRIMARY KEY,
      principal ${t.text} NOT NULL REFERENCES principals(name),
      algorithm ${t.text} NOT NULL,
      jwk_json ${t.text} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      revoked_at_ms ${t.bigint}
    )`,
    `CREATE INDEX keys_by_principal ON keys(principal)`,
    `CREATE TABLE hosts (
      host_id ${t.text} PRIMARY KEY,
      signing_key_id ${t.text} NOT NULL,
      signing_jwk ${t.text} NOT NULL,
      sealing_jwk ${t.text} NOT NULL,
      address ${t.text} NOT NULL,
      labels_json ${t.text} NOT NULL,
      joined_at_ms ${t.bigint} NOT NULL,
      last_seen_ms ${t.bigint} NOT NULL
    )`,
    `CREATE TABLE join_tokens (
      token_hash ${t.text} PRIMARY KEY,
      host_id ${t.text} NOT NULL,
      created_by ${t.text} NOT NULL,
      expires_at_ms ${t.bigint} NOT NULL,
      used_at_ms ${t.bigint}
    )`,
    `CREATE TABLE idempotency (
      scope ${t.text} NOT NULL,
      request_id ${t.text} NOT NULL,
      request_digest ${t.bytes} NOT NULL,
      response ${t.bytes} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      PRIMARY KEY (scope, request_id)
    )`,
    `CREATE TABLE audit_log (
      seq ${t.bigint} PRIMARY KEY,
      time_ms ${t.bigint} NOT NULL,
      principal ${t.text} NOT NULL,
      action ${t.text} NOT NULL,
      target ${t.text} NOT NULL,
      outcome ${t.text} NOT NULL,
      request_id ${t.text} NOT NULL,
      detail_json ${t.text} NOT NULL,
      prev_hash ${t.bytes} NOT NULL,
      hash ${t.bytes} NOT NULL
    )`,
    `CREATE TABLE nonces (
      nonce ${t.bytes} PRIMARY KEY,
      expires_at_ms ${t.bigint} NOT NULL
    )`,
    `CREATE INDEX nonces_by_expiry ON nonces(expires_at_ms)`,
  ],
};
