// Migration 2: the token authority's tables (seed 000) — JWT signing keys (private part sealed
// at rest), services and service accounts with their ACL, long-term tokens (hashes only) and
// the digests of user create requests already used (replay refusal).
import type { Migration } from "./migration.js";

export const token: Migration = {
  id: 2,
  name: "token",
  statements: (t) => [
    `CREATE TABLE token_signing_keys (
      kid ${t.text} PRIMARY KEY,
      public_jwk ${t.text} NOT NULL,
      sealed_private_jwk ${t.bytes} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      rotated_at_ms ${t.bigint},
      retire_at_ms ${t.bigint}
    )`,
    `CREATE TABLE token_services (
      name ${t.text} PRIMARY KEY,
      audience ${t.text} NOT NULL,
      scopes_json ${t.text} NOT NULL
    )`,
    `CREATE TABLE token_service_accounts (
      email ${t.text} PRIMARY KEY,
      display_name ${t.text} NOT NULL,
      actors_json ${t.text} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL
    )`,
    `CREATE TABLE token_long_term (
      accessor ${t.text} PRIMARY KEY,
      service_account ${t.text} NOT NULL,
      scope_key ${t.text} NOT NULL,
      scopes_json ${t.text} NOT NULL,
      token_hash ${t.text} NOT NULL UNIQUE,
      previous_token_hash ${t.text},
      previous_valid_until_ms ${t.bigint},
      version ${t.bigint} NOT NULL,
      host_ids_json ${t.text} NOT NULL,
      holders_json ${t.text} NOT NULL,
      created_at_ms ${t.bigint} NOT NULL,
      issued_at_ms ${t.bigint} NOT NULL,
      expires_at_ms ${t.bigint} NOT NULL,
      revoked_at_ms ${t.bigint},
      revoke_reason ${t.text}
    )`,
    `CREATE INDEX token_long_term_by_previous_hash ON token_long_term(previous_token_hash)`,
    // One live token per (account, scope set), across replicas.
    `CREATE UNIQUE INDEX token_long_term_active ON token_long_term(service_account, scope_key) WHERE revoked_at_ms IS NULL`,
    // One row per (user request, account): a VM with two accounts uses its create request
    // twice, once per account, always for the same VM.
    `CREATE TABLE token_used_requests (
      digest ${t.text} NOT NULL,
      service_account ${t.text} NOT NULL,
      vm_id ${t.text} NOT NULL,
      principal ${t.text} NOT NULL,
      used_at_ms ${t.bigint} NOT NULL,
      PRIMARY KEY (digest, service_account)
    )`,
  ],
};
