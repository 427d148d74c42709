// The hash chain of an agent's privileged audit (seed 002: outcomes audited on the host and the
// server). Record n stores SHA-256(hash(n-1) ‖ its own protobuf encoding with `hash` empty), so
// the agent's file and the server's copy can each be re-walked, and the server can tell a
// host's record it already holds from a different one under the same number.
import { createHash } from "node:crypto";
import { HostAuditRecord } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";

export const HOST_AUDIT_GENESIS = new Uint8Array(32);

export function hostAuditHash(record: HostAuditRecord): Buffer {
  const body = HostAuditRecord.encode({ ...record, hash: new Uint8Array(0) }).finish();
  return createHash("sha256").update(record.prevHash).update(body).digest();
}

/** Why `record` does not continue a chain whose last record is (seq, hash), or undefined. */
export function chainProblem(record: HostAuditRecord, previous: { seq: number; hash: Uint8Array }): string | undefined {
  if (record.seq !== previous.seq + 1) return `record ${record.seq} does not follow record ${previous.seq}`;
  if (!Buffer.from(record.prevHash).equals(Buffer.from(previous.hash))) return `record ${record.seq} does not name record ${previous.seq}'s hash`;
  if (!hostAuditHash(record).equals(Buffer.from(record.hash))) return `record ${record.seq} does not match its own hash`;
  return undefined;
}
