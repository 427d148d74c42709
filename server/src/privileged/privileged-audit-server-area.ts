// PrivilegedAuditService on the server (seed 002: denials and executions are audited on the
// host and the server). An agent forwards its hash-chained privileged audit, signed with its
// host key; the server checks each record continues that host's chain, and appends it to the
// server's own audit log exactly once (a resent record with the same hash is acknowledged).
import { TrustplaneError, invalidArgument } from "../../../sdk/src/errors.js";
import { PrivilegedAuditServiceService, type HostAuditRecord } from "../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import type { ServerArea } from "../processes/area.js";
import { HOST_AUDIT_GENESIS, chainProblem, hostAuditHash } from "./audit/host-audit-chain.js";
import { HostAuditRepository } from "./host-audit-repository.js";

const MAX_RECORDS = 1000;
const MAX_TEXT = 4096;

function checkShape(records: HostAuditRecord[]): void {
  if (records.length === 0 || records.length > MAX_RECORDS) throw invalidArgument("records", `give 1..${MAX_RECORDS} records`);
  for (const [i, r] of records.entries()) {
    if (i > 0 && r.seq !== records[i - 1]!.seq + 1) throw invalidArgument("records", `records must be consecutive; ${r.seq} follows ${records[i - 1]!.seq}`);
    for (const [k, v] of Object.entries(r)) {
      if (typeof v === "string" && v.length > MAX_TEXT) throw invalidArgument(`records[${i}].${k}`, `at most ${MAX_TEXT} characters`);
    }
  }
}

export const privilegedAuditServerArea: ServerArea = {
  name: "privileged-audit",
  async start(ctx) {
    const repo = new HostAuditRepository(ctx.storage.db);
    ctx.bind(PrivilegedAuditServiceService, {
      async recordHostAudit(req, call) {
        if (call.caller.principal !== `host:${req.hostId}`) {
          throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `${call.caller.principal} may forward only its own audit, not host ${req.hostId}'s`, "host_id");
        }
        checkShape(req.records);
        const through = await ctx.storage.db.transaction(async () => {
          let head = (await repo.head(req.hostId)) ?? { seq: 0, hash: Buffer.from(HOST_AUDIT_GENESIS) };
          for (const r of req.records) {
            if (r.seq <= head.seq) {
              const held = await repo.hashOf(req.hostId, r.seq);
              if (!held || !held.equals(Buffer.from(r.hash)) || !hostAuditHash(r).equals(held)) {
                throw new TrustplaneError("ALREADY_EXISTS", "AUDIT_RECORD_CONFLICT", `host ${req.hostId} already forwarded a different record ${r.seq}; its audit was rewritten`, "records");
              }
              continue;
            }
            const problem = chainProblem(r, head);
            if (problem) {
              const reason = r.seq > head.seq + 1 ? "AUDIT_GAP" : "AUDIT_CHAIN_BROKEN";
              throw new TrustplaneError("FAILED_PRECONDITION", reason, `host ${req.hostId}: ${problem} (the server holds its records through ${head.seq})`, "records");
            }
            const rec = await ctx.storage.audit.append({
              // Who acted: the certified signer; before the certificate was checked only the carrier is known.
              principal: r.signer || r.carrier,
              action: `privileged.${r.operation}`,
              target: r.vmId ? `${req.hostId}/${r.vmId}` : req.hostId,
              outcome: r.outcome,
              requestId: r.requestId,
              detail: { hostId: req.hostId, hostSeq: r.seq, hostTimeMs: r.timeMs, signer: r.signer, carrier: r.carrier, detail: r.detail, hostHash: Buffer.from(r.hash).toString("hex") },
            });
            await repo.add(req.hostId, r.seq, r.hash, rec.seq);
            head = { seq: r.seq, hash: Buffer.from(r.hash) };
          }
          return head.seq;
        });
        return { recordedThroughSeq: through };
      },
    });
  },
};
