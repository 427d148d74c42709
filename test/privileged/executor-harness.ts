// Test support: the agent's privileged executor in-process, without gRPC or a dev env — a CA,
// a host key, operator certificates and a scripted operation registry — so each check of the
// executor and of the SDK's opening can be reached (and be seen to fail) on its own.
import { randomBytes } from "node:crypto";
import { generateSigningKey, importVerificationKey, issueCertificate, signEnvelope, type SigningKey, type VerificationKey } from "../../sdk/src/auth/index.js";
import { generateX25519KeyPair, seal, type X25519KeyPair } from "../../sdk/src/envelope/index.js";
import { Certificate, CallStatement, SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { PrivilegedResult, type PrivilegedRequest, type SealedResult } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { PRIVILEGED_RESULT_TYPE, buildPrivilegedRequest, resultAad, resultInfo, signPrivilegedRequest, type BuildRequestInput } from "../../sdk/src/privileged/index.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import type { Caller } from "../../server/src/runtime/auth/caller.js";
import { PrivilegedExecutor, type PrivilegedAuditEvent } from "../../server/src/privileged/executor/privileged-executor.js";
import type { OperationContext, OperationName } from "../../server/src/privileged/operations/operation-registry.js";
import type { OperationOutput } from "../../server/src/privileged/operations/operation-output.js";

export const HOST = "host-a";

export interface Operator {
  principal: string;
  key: SigningKey;
  cert: Uint8Array;
  certificate: Certificate;
}

export interface Harness {
  /** The executor's clock; tests move it. */
  clock: { now: number };
  ca: SigningKey;
  hostKey: SigningKey;
  hostVerification: VerificationKey;
  executor: PrivilegedExecutor;
  audit: PrivilegedAuditEvent[];
  runs: { name: OperationName; req: PrivilegedRequest; ctx: OperationContext }[];
  /** What the scripted registry answers (default: empty host diagnostics). */
  answer: (name: OperationName, req: PrivilegedRequest) => Promise<OperationOutput>;
  operator(principal: string, classes: string[], opts?: { hostPattern?: string; options?: { name: string; value: string; critical: boolean }[] }): Operator;
  caller(op: Operator): Caller;
  /** A request signed by `op`, and a recipient key pair for its result. */
  signed(op: Operator, operation: BuildRequestInput["operation"], extra?: Partial<BuildRequestInput>): { req: PrivilegedRequest; envelope: SignedEnvelope; bytes: Uint8Array; me: X25519KeyPair };
}

export function makeHarness(hostId = HOST): Harness {
  const ca = generateSigningKey("Ed25519");
  const hostKey = generateSigningKey("Ed25519");
  const sealing = generateX25519KeyPair();
  const clock = { now: Date.now() };
  const h: Partial<Harness> & { audit: PrivilegedAuditEvent[]; runs: Harness["runs"] } = { clock, ca, hostKey, hostVerification: importVerificationKey(hostKey.publicJwk), audit: [], runs: [] };
  h.answer = async () => ({ hostDiagnostics: { loadAverage: [0, 0, 0], memoryTotalBytes: 1, memoryAvailableBytes: 1, uptimeSeconds: 1, kernel: "test", processes: [] } });
  const caKeys = [importVerificationKey(ca.publicJwk)];
  h.executor = new PrivilegedExecutor({
    hostId,
    hostKey,
    sealingPrivateKey: sealing.privateKey,
    caKeys: () => caKeys,
    nonces: new MemoryNonceStore({ now: () => clock.now }),
    now: () => clock.now,
    operations: {
      run: async (name, req, ctx) => {
        h.runs.push({ name, req, ctx });
        return h.answer!(name, req);
      },
    },
    audit: {
      async record(e) {
        h.audit.push(e);
      },
    },
  });
  h.operator = (principal, classes, opts = {}) => {
    const key = generateSigningKey("Ed25519");
    const now = clock.now;
    const env = issueCertificate(ca, { principal, publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: classes, hostPattern: opts.hostPattern ?? "host-*", notBeforeMs: now - 60_000, notAfterMs: now + 600_000, options: opts.options ?? [] });
    return { principal, key, cert: SignedEnvelope.encode(env).finish(), certificate: Certificate.decode(env.payload) };
  };
  h.caller = (op) => ({ principal: op.principal, keyId: op.key.keyId, roles: [], certificate: op.certificate, statement: CallStatement.fromPartial({}) });
  h.signed = (op, operation, extra = {}) => {
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId, operation, recipientPublicKey: me.publicKey, requestId: `prq_${randomBytes(6).toString("hex")}`, notBeforeMs: clock.now, ...extra });
    const envelope = signPrivilegedRequest(req, op.key, op.cert);
    return { req, envelope, bytes: SignedEnvelope.encode(envelope).finish(), me };
  };
  return h as Harness;
}

/** A result signed by the real host key and sealed for request `s`, with any fields: what only a
 * broken or malicious host could send, so the opener's own checks of the result body are reached. */
export function sealAsHost(h: Harness, s: { req: PrivilegedRequest; bytes: Uint8Array }, fields: Partial<PrivilegedResult>, hostId = HOST): SealedResult {
  const result = PrivilegedResult.fromPartial({ requestId: s.req.requestId, hostId, requestDigest: resultInfo(s.bytes), outcome: "ok", ...fields });
  const signed = signEnvelope(PRIVILEGED_RESULT_TYPE, PrivilegedResult.encode(result).finish(), [h.hostKey]);
  const sealed = seal(s.req.recipientPublicKey, SignedEnvelope.encode(signed).finish(), { info: resultInfo(s.bytes), aad: resultAad(hostId, s.req.requestId) });
  return { hostId, requestId: s.req.requestId, enc: sealed.enc, ciphertext: sealed.ciphertext };
}
