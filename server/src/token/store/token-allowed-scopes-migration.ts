// Migration for the token area's second step (issue 3): service accounts get the scopes they
// may be granted (allowed_scopes), and signing keys an activation time so a new key is
// published in every replica's JWKS before it signs (pre-announce). Additive columns only.
import type { Migration } from "../../runtime/storage/migrations/migration.js";

export const tokenAllowedScopesAndKeyActivation: Migration = {
  id: 9,
  name: "token-allowed-scopes-key-activation",
  statements: (t) => [
    // Empty list: the account may be granted any scope a declared service owns (the
    // behaviour of accounts created before this migration).
    `ALTER TABLE token_service_accounts ADD COLUMN allowed_scopes_json ${t.text} NOT NULL DEFAULT '[]'`,
    // NULL: active from created_at_ms (keys made before this migration).
    `ALTER TABLE token_signing_keys ADD COLUMN activates_at_ms ${t.bigint}`,
  ],
};
