// Rebuilding the executor's replay cache from the agent's own privileged audit (seed 002:
// each request runs once) after a restart. Sound because of how the executor writes the
// audit: from the moment a request's nonce is spent, every record about it carries that
// nonce, an operation with effects runs only after its durable "attempt" record, and a result
// leaves the host only after its durable outcome record. So a request whose nonce is absent
// here had no effect and returned nothing, and running it now is its first run.
import type { HostAuditRecord } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { NonceStore } from "../../runtime/auth/nonce-store.js";

/** Remembers every still-unexpired request nonce the records name; returns how many. */
export async function rememberSpentNonces(records: readonly HostAuditRecord[], nonces: NonceStore, nowMs: number): Promise<number> {
  let n = 0;
  for (const r of records) {
    if (r.requestNonce.length === 0 || r.replayUntilMs <= nowMs) continue;
    // false: an earlier record (the attempt before its outcome) named it already.
    if (await nonces.remember(r.requestNonce, r.replayUntilMs)) n++;
  }
  return n;
}
