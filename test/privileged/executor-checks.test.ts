// The privileged executor's checks one by one, in process (no gRPC): idempotent retries of the
// same envelope, the request digest over the bytes received, the host pattern (checked in one
// place), per-key certificate options (operations allow-list, max_memory_read), the principal
// as the control plane's initiator, and the opener's checks of the host-signed result body.
import { createHash, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hostPatternMatches, issueCertificate } from "../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Certificate, SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { HostAuditRecord, SubmitRequest, type SealedResult } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { openSealedResult, signPrivilegedRequest } from "../../sdk/src/privileged/index.js";
import { rememberSpentNonces } from "../../server/src/privileged/audit/spent-nonces.js";
import { submittedRequestBytes } from "../../server/src/privileged/executor/submitted-request-bytes.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { HOST, makeHarness, sealAsHost, type Harness } from "./executor-harness.js";
import { refused as refusal } from "../support/refused.js";


function opener(h: Harness, s: { req: { requestId: string }; bytes: Uint8Array; me: { privateKey: Uint8Array } }) {
  return (sealed: SealedResult, requestEnvelope = s.bytes) =>
    openSealedResult({ sealed, recipientPrivateKey: s.me.privateKey, requestEnvelope, hostKey: h.hostVerification, hostId: HOST, requestId: s.req.requestId });
}

describe("idempotent Submit", () => {
  it("answers a retry of the same envelope with the same sealed result and runs nothing again", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const s = h.signed(op, { collectHostDiagnostics: {} });
    const first = await h.executor.execute(s.bytes, h.caller(op));
    const again = await h.executor.execute(s.bytes, h.caller(op));
    expect(again).toEqual(first);
    expect(h.runs).toHaveLength(1);
    expect(h.audit.map((a) => a.outcome)).toEqual(["ok", "ok"]);
    expect(h.audit[1]!.detail).toMatch(/retry.*not executed again/);
    expect(opener(h, s)(again).outcome).toBe("ok");
  });

  it("waits for an in-flight original instead of refusing a concurrent retry", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const s = h.signed(op, { collectHostDiagnostics: {} });
    const [a, b] = await Promise.all([h.executor.execute(s.bytes, h.caller(op)), h.executor.execute(s.bytes, h.caller(op))]);
    expect(b).toEqual(a);
    expect(h.runs).toHaveLength(1);
  });

  it("still refuses another request under a spent nonce (NONCE_REPLAYED)", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const s = h.signed(op, { collectHostDiagnostics: {} });
    await h.executor.execute(s.bytes, h.caller(op));
    const other = SignedEnvelope.encode(signPrivilegedRequest({ ...s.req, justification: "again" }, op.key, op.cert)).finish();
    expect((await refusal(h.executor.execute(other, h.caller(op)))).reason).toBe("NONCE_REPLAYED");
    expect(h.runs).toHaveLength(1);
  });

  it("repeats a refusal that spent the nonce, and checks afresh one that did not", async () => {
    const h = makeHarness();
    const support = h.operator("support", ["lifecycle"]);
    const denied = h.signed(support, { collectHostDiagnostics: {} });
    expect((await refusal(h.executor.execute(denied.bytes, h.caller(support)))).reason).toBe("POLICY_DENIED");
    expect((await refusal(h.executor.execute(denied.bytes, h.caller(support)))).reason).toBe("POLICY_DENIED");
    const op = h.operator("investigator", ["inspect"]);
    const early = h.signed(op, { collectHostDiagnostics: {} }, { notBeforeMs: h.clock.now + 120_000, windowMs: 60_000 });
    expect((await refusal(h.executor.execute(early.bytes, h.caller(op)))).reason).toBe("REQUEST_NOT_YET_VALID");
    h.clock.now += 120_000;
    expect(opener(h, early)(await h.executor.execute(early.bytes, h.caller(op))).outcome).toBe("ok");
  });
});

describe("the request digest", () => {
  it("is taken over the envelope bytes received, not a re-encoding of them", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const s = h.signed(op, { collectHostDiagnostics: {} });
    // An unknown field (15, varint 1) survives in the bytes but not in a decode + re-encode.
    const received = Buffer.concat([s.bytes, Buffer.from([0x78, 0x01])]);
    expect(SignedEnvelope.encode(SignedEnvelope.decode(received)).finish()).toEqual(s.bytes);
    const sealed = await h.executor.execute(received, h.caller(op));
    const result = opener(h, s)(sealed, received);
    expect(Buffer.from(result.requestDigest).equals(createHash("sha256").update(received).digest())).toBe(true);
  });

  it("comes out of a SubmitRequest exactly as sent, and a request carrying two envelopes is refused", () => {
    fc.assert(
      fc.property(fc.string(), fc.uint8Array({ maxLength: 200 }), fc.string(), (requestId, payload, payloadType) => {
        const envelope = { payloadType, payload, signatures: [] };
        const raw = SubmitRequest.encode({ requestId, envelope }).finish();
        expect(Buffer.from(submittedRequestBytes(raw).envelope!).equals(Buffer.from(SignedEnvelope.encode(envelope).finish()))).toBe(true);
      }),
    );
    const one = SubmitRequest.encode({ requestId: "r", envelope: { payloadType: "a", payload: new Uint8Array([1]), signatures: [] } }).finish();
    const two = Buffer.concat([one, SubmitRequest.encode({ requestId: "", envelope: { payloadType: "b", payload: new Uint8Array(), signatures: [] } }).finish()]);
    expect(() => submittedRequestBytes(two)).toThrow(expect.objectContaining({ reason: "INVALID_ARGUMENT" }));
  });
});

describe("certificate restrictions", () => {
  it("refuses a certificate for another host pattern (checked once, in verifyCertificate)", async () => {
    const h = makeHarness();
    const prod = h.operator("prod", ["inspect"], { hostPattern: "prod-*" });
    const s = h.signed(prod, { collectHostDiagnostics: {} });
    expect((await refusal(h.executor.execute(s.bytes, h.caller(prod)))).reason).toBe("HOST_MISMATCH");
    expect(h.runs).toHaveLength(0);
  });

  it("treats ? in host patterns as one character, as the CA documents", async () => {
    expect(hostPatternMatches("host-?", "host-a")).toBe(true);
    expect(hostPatternMatches("host-?", "host-ab")).toBe(false);
    expect(hostPatternMatches("host-?", "host-")).toBe(false);
    expect(hostPatternMatches("h?st-*", "host-a")).toBe(true);
    expect(hostPatternMatches("*-?", "dev-host-1")).toBe(true);
    expect(hostPatternMatches("?", "")).toBe(false);
    const h = makeHarness();
    const ok = h.operator("one-char", ["inspect"], { hostPattern: "host-?" });
    await h.executor.execute(h.signed(ok, { collectHostDiagnostics: {} }).bytes, h.caller(ok));
    const no = h.operator("two-char", ["inspect"], { hostPattern: "host-??" });
    expect((await refusal(h.executor.execute(h.signed(no, { collectHostDiagnostics: {} }).bytes, h.caller(no)))).reason).toBe("HOST_MISMATCH");
  });

  it("limits a support key to the operations it lists (start/stop, not terminate)", async () => {
    const h = makeHarness();
    h.answer = async (_name, req) => ({ guestState: { vmId: req.startGuest?.vmId ?? req.stopGuest?.vmId ?? "", state: "RUNNING" } });
    const support = h.operator("support", ["lifecycle"], { options: [{ name: "operations", value: "start_guest,stop_guest", critical: true }] });
    await h.executor.execute(h.signed(support, { startGuest: { vmId: "vm-1" } }).bytes, h.caller(support));
    await h.executor.execute(h.signed(support, { stopGuest: { vmId: "vm-1", timeoutSeconds: 1, force: false } }).bytes, h.caller(support));
    const e = await refusal(h.executor.execute(h.signed(support, { terminateGuest: { vmId: "vm-1" } }).bytes, h.caller(support)));
    expect([e.status, e.reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    expect(e.message).toContain("allows only start_guest, stop_guest");
    expect(h.runs.map((r) => r.name)).toEqual(["start_guest", "stop_guest"]);
  });

  it("refuses an operations option naming unknown operations or operations outside the classes", async () => {
    const h = makeHarness();
    for (const value of ["start_guest,format_disk", "start_guest,read_guest_memory", ""]) {
      const op = h.operator(`bad-${value}`, ["lifecycle"], { options: [{ name: "operations", value, critical: true }] });
      const e = await refusal(h.executor.execute(h.signed(op, { startGuest: { vmId: "vm-1" } }).bytes, h.caller(op)));
      expect(e.reason, value).toBe("CERTIFICATE_INVALID");
    }
    expect(h.runs).toHaveLength(0);
  });

  it("passes max_memory_read to the operation, and refuses a malformed one", async () => {
    const h = makeHarness();
    h.answer = async () => ({ data: new Uint8Array(16) });
    const limited = h.operator("limited", ["memory"], { options: [{ name: "max_memory_read", value: "4096", critical: true }] });
    await h.executor.execute(h.signed(limited, { readGuestMemory: { vmId: "vm-1", address: 0, length: 16 } }).bytes, h.caller(limited));
    expect(h.runs[0]!.ctx.maxMemoryRead).toBe(4096);
    const broken = h.operator("broken", ["memory"], { options: [{ name: "max_memory_read", value: "lots", critical: true }] });
    expect((await refusal(h.executor.execute(h.signed(broken, { readGuestMemory: { vmId: "vm-1", address: 0, length: 16 } }).bytes, h.caller(broken)))).reason).toBe("CERTIFICATE_INVALID");
  });

  it("keeps unknown critical options fatal", async () => {
    const h = makeHarness();
    const odd = h.operator("odd", ["inspect"], { options: [{ name: "force-command", value: "x", critical: true }] });
    expect((await refusal(h.executor.execute(h.signed(odd, { collectHostDiagnostics: {} }).bytes, h.caller(odd)))).reason).toBe("CERTIFICATE_INVALID");
  });

  it("names the certified principal (not the request id) as the operation's initiator", async () => {
    const h = makeHarness();
    h.answer = async () => ({ guestState: { vmId: "vm-1", state: "RUNNING" } });
    const op = h.operator("alice", ["lifecycle"]);
    await h.executor.execute(h.signed(op, { startGuest: { vmId: "vm-1" } }).bytes, h.caller(op));
    expect(h.runs[0]!.ctx.principal).toBe("alice");
  });

  it("refuses a unary Submit of an operation whose result streams, before its nonce is spent", async () => {
    const h = makeHarness();
    const op = h.operator("security", ["memory"]);
    const s = h.signed(op, { dumpGuestMemory: { vmId: "vm-1", format: "raw" } });
    expect((await refusal(h.executor.execute(s.bytes, h.caller(op)))).reason).toBe("STREAM_REQUIRED");
    expect(h.runs).toHaveLength(0);
  });
});

describe("opening checks the host-signed result body", () => {
  const h = makeHarness();
  const op = h.operator("investigator", ["inspect"]);
  const s = h.signed(op, { collectHostDiagnostics: {} });
  const open = opener(h, s);

  it("opens the genuine result", async () => {
    expect(open(await h.executor.execute(s.bytes, h.caller(op))).outcome).toBe("ok");
  });

  it("refuses a result the host signed for another host", () => {
    expect(() => open(sealAsHost(h, s, { hostId: "host-b" }))).toThrow(expect.objectContaining({ reason: "RESULT_MISMATCH", message: expect.stringMatching(/signed a result for host host-b/) }));
  });

  it("refuses a result the host signed for another request id", () => {
    expect(() => open(sealAsHost(h, s, { requestId: "prq_other" }))).toThrow(expect.objectContaining({ reason: "RESULT_MISMATCH", message: expect.stringMatching(/for request prq_other/) }));
  });

  it("refuses a result whose request digest names another request", () => {
    expect(() => open(sealAsHost(h, s, { requestDigest: new Uint8Array(32) }))).toThrow(expect.objectContaining({ reason: "RESULT_MISMATCH", message: expect.stringMatching(/answers a different request/) }));
  });

  it("refuses a result signed by another key than the host's", () => {
    const other = makeHarness();
    expect(() => open(sealAsHost(other, s, {}))).toThrow(expect.objectContaining({ status: "DATA_LOSS" }));
  });
});

describe("one signature check when the signer's own call carries its request", () => {
  /** The signed request with its envelope signature replaced by garbage (same key id and certificate). */
  function forged(h: Harness, op: ReturnType<Harness["operator"]>, sigFields: Partial<SignedEnvelope["signatures"][number]> = {}) {
    const s = h.signed(op, { collectHostDiagnostics: {} });
    const sig = s.envelope.signatures[0]!;
    return SignedEnvelope.encode({ ...s.envelope, signatures: [{ ...sig, sig: randomBytes(64), ...sigFields }] }).finish();
  }

  it("relies on the verified call signature of the same key and certificate over the request bytes", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    await h.executor.execute(forged(h, op), h.caller(op), "in-call");
    expect(h.runs).toHaveLength(1);
  });

  it("verifies the envelope signature for a sealed request, even from its own signer", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    expect((await refusal(h.executor.execute(forged(h, op), h.caller(op), "sealed"))).reason).toBe("SIGNATURE_INVALID");
  });

  it("verifies it when the call comes from another key (a carrier)", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const carrier = h.operator("technician", ["carry"]);
    expect((await refusal(h.executor.execute(forged(h, op), h.caller(carrier), "in-call"))).reason).toBe("SIGNATURE_INVALID");
  });

  it("verifies it when the call presents another certificate for the same key", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const call = { ...h.caller(op), certificate: issueAgain(h, op) };
    expect((await refusal(h.executor.execute(forged(h, op), call, "in-call"))).reason).toBe("SIGNATURE_INVALID");
  });

  it("verifies it when the envelope's signature names another key id than the call's", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    expect((await refusal(h.executor.execute(forged(h, op, { keyId: "another-key" }), h.caller(op), "in-call"))).reason).toBe("UNKNOWN_KEY");
    expect(h.runs).toHaveLength(0);
  });

  it("still checks the payload type first", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    const s = h.signed(op, { collectHostDiagnostics: {} });
    const retyped = SignedEnvelope.encode({ ...s.envelope, payloadType: "application/vnd.trustplane.call-statement+proto" }).finish();
    expect((await refusal(h.executor.execute(retyped, h.caller(op), "in-call"))).reason).toBe("PAYLOAD_TYPE_MISMATCH");
  });
});

/** The operator's certificate issued again by the same CA for the same key (a new serial). */
function issueAgain(h: Harness, op: ReturnType<Harness["operator"]>): Certificate {
  const env = issueCertificate(h.ca, { principal: op.principal, publicKeyJwk: JSON.stringify(op.key.publicJwk), operationClasses: op.certificate.operationClasses, hostPattern: op.certificate.hostPattern, notBeforeMs: op.certificate.notBeforeMs, notAfterMs: op.certificate.notAfterMs });
  return Certificate.decode(env.payload);
}

describe("attempts and spent nonces in the audit", () => {
  it("records the attempt of an operation with effects durably before it runs, then its outcome", async () => {
    const h = makeHarness();
    const seenBeforeRun: string[][] = [];
    h.answer = async (_name, req) => {
      seenBeforeRun.push(h.audit.map((a) => a.outcome));
      return { guestState: { vmId: req.stopGuest!.vmId, state: "STOPPED" } };
    };
    const op = h.operator("support", ["lifecycle"]);
    const s = h.signed(op, { stopGuest: { vmId: "vm-1", timeoutSeconds: 1, force: false } });
    await h.executor.execute(s.bytes, h.caller(op));
    expect(seenBeforeRun).toEqual([["attempt"]]);
    expect(h.audit.map((a) => [a.outcome, a.requestId])).toEqual([
      ["attempt", s.req.requestId],
      ["ok", s.req.requestId],
    ]);
  });

  it("records no attempt for an operation that only reads host status", async () => {
    const h = makeHarness();
    const op = h.operator("investigator", ["inspect"]);
    await h.executor.execute(h.signed(op, { collectHostDiagnostics: {} }).bytes, h.caller(op));
    expect(h.audit.map((a) => a.outcome)).toEqual(["ok"]);
  });

  it("leaves the attempt (and no outcome from the operation) when the operation dies mid-way", async () => {
    const h = makeHarness();
    h.answer = async () => {
      throw new TrustplaneError("INTERNAL", "QMP_FAILED", "the monitor went away");
    };
    const op = h.operator("security", ["memory"]);
    const s = h.signed(op, { readGuestMemory: { vmId: "vm-1", address: 0, length: 16 } });
    expect((await refusal(h.executor.execute(s.bytes, h.caller(op)))).reason).toBe("QMP_FAILED");
    expect(h.audit.map((a) => a.outcome)).toEqual(["attempt", "QMP_FAILED"]);
  });

  it("names the spent nonce and its expiry in every record after the nonce step, none before", async () => {
    const h = makeHarness();
    const op = h.operator("support", ["lifecycle"]);
    h.answer = async () => ({ guestState: { vmId: "vm-1", state: "RUNNING" } });
    const s = h.signed(op, { startGuest: { vmId: "vm-1" } });
    await h.executor.execute(s.bytes, h.caller(op));
    for (const a of h.audit) expect([Buffer.from(a.requestNonce!).equals(s.req.nonce), a.replayUntilMs]).toEqual([true, s.req.notAfterMs + 30_000]);
    const early = h.signed(op, { startGuest: { vmId: "vm-1" } }, { hostId: "host-b" });
    await refusal(h.executor.execute(early.bytes, h.caller(op)));
    expect(h.audit.at(-1)!.requestNonce).toBeUndefined();
  });

  it("rebuilds a replay cache from the records so a replay after a restart is refused", async () => {
    const h = makeHarness();
    const op = h.operator("support", ["lifecycle"]);
    h.answer = async () => ({ guestState: { vmId: "vm-1", state: "RUNNING" } });
    const s = h.signed(op, { startGuest: { vmId: "vm-1" } });
    await h.executor.execute(s.bytes, h.caller(op));
    const records = h.audit.map((a, i) => HostAuditRecord.fromPartial({ ...a, seq: i + 1 }));
    const nonces = new MemoryNonceStore({ now: () => h.clock.now });
    expect(await rememberSpentNonces(records, nonces, h.clock.now)).toBe(1);
    expect(await nonces.remember(s.req.nonce, s.req.notAfterMs)).toBe(false);
    // Expired ones are not kept.
    expect(await rememberSpentNonces(records, new MemoryNonceStore(), s.req.notAfterMs + 60_000)).toBe(0);
  });
});
