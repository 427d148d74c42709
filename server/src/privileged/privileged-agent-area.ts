// The privileged-operations area on the agent: PrivilegedService over the executor, with the
// host's keys from join, the CA it trusts, a replay cache, the VM control plane and the
// agent's patchable runtime configuration. Every outcome goes to the agent's hash-chained
// audit file and from there to the server's audit log; log levels never reach either.
import path from "node:path";
import { createClient } from "../../../sdk/src/client/create-client.js";
import { invalidArgument } from "../../../sdk/src/errors.js";
import { PrivilegedAuditServiceService, PrivilegedServiceService, type SealedRequest } from "../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { MemoryNonceStore } from "../runtime/auth/memory-nonce-store.js";
import type { MethodDef } from "../runtime/auth/service-binder.js";
import type { AgentArea } from "../processes/area.js";
import { controlPlaneFor } from "../vm/agent/vm-agent-area.js";
import { HostAuditFile } from "./audit/host-audit-file.js";
import { HostAuditForwarder } from "./audit/host-audit-forwarder.js";
import { rememberSpentNonces } from "./audit/spent-nonces.js";
import { PrivilegedExecutor } from "./executor/privileged-executor.js";
import type { EnvelopeSource } from "./executor/call-covered-envelope.js";
import { submittedRequestBytes, type SubmittedRequestBytes } from "./executor/submitted-request-bytes.js";
import { createOperationRegistry } from "./operations/operation-registry.js";
import { RuntimeConfigStore } from "./operations/runtime-config-store.js";

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);
/** Audit detail is a message, not a payload: bounded so the server's limit is never reached. */
const MAX_DETAIL = 1000;

type Received<Req> = { requestId: string; decoded: Req; received: SubmittedRequestBytes };

/** The generated method with its raw request bytes kept beside the decoded message. */
function withReceivedBytes<M extends MethodDef<{ requestId: string }>>(def: M): Omit<M, "requestDeserialize"> & { requestDeserialize: (bytes: Buffer) => Received<ReturnType<M["requestDeserialize"]>> } {
  return {
    ...def,
    requestDeserialize: (bytes: Buffer) => {
      const decoded = def.requestDeserialize(bytes) as ReturnType<M["requestDeserialize"]>;
      return { requestId: decoded.requestId, decoded, received: submittedRequestBytes(bytes) };
    },
  };
}

export const privilegedAgentArea: AgentArea = {
  name: "privileged",
  async start(ctx) {
    let agentMaxMemoryRead: number | undefined;
    const config = new RuntimeConfigStore(path.join(ctx.stateDir, "runtime-config.json"), {
      log_level: {
        initial: ctx.config.logLevel,
        validate: (v) => (LOG_LEVELS.has(v) ? undefined : `must be one of ${[...LOG_LEVELS].join(", ")}`),
        apply: (v) => ctx.setLogLevel(v),
      },
      max_memory_read_bytes: {
        // "0": no agent-wide limit beyond the guest's memory and each key's max_memory_read.
        initial: "0",
        validate: (v) => (/^(0|[1-9][0-9]{0,15})$/.test(v) ? undefined : "must be a whole number of bytes (0 for no limit)"),
        apply: (v) => {
          agentMaxMemoryRead = v === "0" ? undefined : Number(v);
        },
      },
    });
    const auditFile = HostAuditFile.open(path.join(ctx.stateDir, "privileged-audit.jsonl"));
    const auditClient = createClient(PrivilegedAuditServiceService, ctx.serverAddress, { key: ctx.signingKey, certificate: ctx.hostCertificate, credentials: ctx.serverCredentials });
    const forwarder = new HostAuditForwarder({ hostId: ctx.hostId, sink: auditClient, cursorFile: path.join(ctx.stateDir, "privileged-audit.forwarded"), logger: ctx.logger });
    const records = auditFile.takeRecords();
    // The replay cache lives in memory; what a previous run spent is read back from the audit.
    const nonces = new MemoryNonceStore();
    const respent = await rememberSpentNonces(records, nonces, Date.now());
    if (respent > 0) ctx.logger.info({ nonces: respent }, "privileged replay cache rebuilt from the audit file");
    forwarder.enqueue(records);
    const executor = new PrivilegedExecutor({
      hostId: ctx.hostId,
      hostKey: ctx.signingKey,
      sealingPrivateKey: ctx.sealing.privateKey,
      caKeys: () => ctx.caKeys,
      nonces,
      operations: createOperationRegistry({ controlPlane: controlPlaneFor(ctx.hostId), config, agentMaxMemoryRead: () => agentMaxMemoryRead }),
      audit: {
        async record(e) {
          const record = await auditFile.append({ ...e, signer: e.signer ?? "", detail: (e.detail ?? "").slice(0, MAX_DETAIL) });
          forwarder.enqueue([record]);
          ctx.logger.info({ auditSeq: record.seq, requestId: e.requestId, operation: e.operation, outcome: e.outcome }, `privileged ${e.operation}: ${e.outcome}`);
        },
      },
    });
    const envelopeOf = (req: { decoded: { sealed?: SealedRequest }; received: SubmittedRequestBytes }): [Uint8Array, EnvelopeSource] => {
      // Sliced from the very bytes the call statement's digest covers.
      if (req.received.envelope) return [req.received.envelope, "in-call"];
      if (req.decoded.sealed) return [executor.unsealRequest(req.decoded.sealed), "sealed"];
      throw invalidArgument("request", "give a signed envelope or a sealed request");
    };
    ctx.bind(
      { submit: withReceivedBytes(PrivilegedServiceService.submit), submitStream: withReceivedBytes(PrivilegedServiceService.submitStream) },
      {
        async submit(req, callCtx) {
          const [envelope, source] = envelopeOf(req);
          return { result: await executor.execute(envelope, callCtx.caller, source) };
        },
        async *submitStream(req, callCtx) {
          const [envelope, source] = envelopeOf(req);
          yield* executor.executeStream(envelope, callCtx.caller, source);
        },
      },
    );
    return {
      async stop() {
        await forwarder.drain(2000);
        forwarder.stop();
        auditClient.close();
        auditFile.close();
      },
    };
  },
};
