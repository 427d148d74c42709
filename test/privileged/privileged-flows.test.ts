// Privileged operations end to end on `trustplane dev`: operators with CA certificates sign
// requests, the host's agent verifies and executes them on real things (host /proc, a sandbox
// VM, its own config), signs the result and seals it to the requester. The three flows from
// the issue, and every refusal with its reason.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey, type VerificationKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { HostKeysServiceService, PrivilegedRequest, PrivilegedServiceService, SubmitRequest, type SealedResult } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { buildPrivilegedRequest, openSealedResult, sealPrivilegedRequest, signPrivilegedRequest, trustedHostKeys, type BuildRequestInput } from "../../sdk/src/privileged/index.js";
import { PINNED_CA_FILE } from "../../server/src/privileged/host-keys-server-area.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const HOST = "dev-host-1";
let env: DevEnv;
let hostKey: VerificationKey;
let hostSealing: Uint8Array;
let vmId = "";

interface Operator {
  key: SigningKey;
  cert: Uint8Array;
}

async function operator(name: string, classes: string[], opts: { hostPattern?: string; ttl?: number; options?: { name: string; value: string; critical: boolean }[] } = {}): Promise<Operator> {
  const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
  try {
    if (!(await auth.listPrincipals({ pageSize: 1000 })).principals.some((p) => p.name === name)) await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user" });
    const key = generateSigningKey("Ed25519");
    const { certificate } = await auth.issueCertificate({
      requestId: `c-${name}-${key.keyId}`,
      principal: name,
      publicKeyJwk: JSON.stringify(key.publicJwk),
      operationClasses: classes,
      hostPattern: opts.hostPattern ?? "dev-host-*",
      ttlSeconds: opts.ttl ?? 600,
      options: opts.options ?? [],
    });
    return { key, cert: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}

function agentAs(op: Operator) {
  return createClient(PrivilegedServiceService, env.dev.agent.address, { key: op.key, certificate: op.cert, targetHost: HOST });
}

async function refused(p: Promise<unknown>): Promise<TrustplaneError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TrustplaneError) return e;
    throw e;
  }
  throw new Error("unexpectedly succeeded");
}

let investigator: Operator;
let technician: Operator;
let support: Operator;

function request(op: Partial<BuildRequestInput["operation"]>, recipient: Uint8Array, extra: Partial<BuildRequestInput> = {}) {
  return buildPrivilegedRequest({ hostId: HOST, operation: op, recipientPublicKey: recipient, ...extra });
}

function open(sealed: SealedResult, envelope: SignedEnvelope, privateKey: Uint8Array, requestId: string) {
  return openSealedResult({ sealed, recipientPrivateKey: privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey, hostId: HOST, requestId });
}

beforeAll(async () => {
  env = await startDevEnv();
  investigator = await operator("investigator", ["lifecycle", "inspect", "memory", "patch"]);
  technician = await operator("technician", ["carry"]);
  support = await operator("support", ["lifecycle"]);
  // The host's keys, trusted because the pinned CA key (written by trustplane dev) signed their
  // binding, not because the server relayed them.
  const keys = createClient(HostKeysServiceService, env.dev.server.address, { key: env.admin });
  const res = await keys.getHostKeys({ hostIds: [HOST] });
  keys.close();
  const host = trustedHostKeys(res, { caJwk: readFileSync(path.join(env.config.dataDir, PINNED_CA_FILE), "utf8") }).get(HOST)!;
  hostKey = host.signing;
  hostSealing = host.sealing;
  const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
  vmId = (await vms.createVm({ requestId: "priv-vm", name: "evidence", image: "process", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } })).vm!.vmId;
  for (let i = 0; i < 200 && (await vms.getVm({ vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 25));
  vms.close();
});

afterAll(async () => {
  await env?.stop();
});

describe("privileged flows", () => {
  it("direct: an operator's signed request runs and only the operator opens the host-signed result", async () => {
    const me = generateX25519KeyPair();
    const req = request({ collectHostDiagnostics: {} }, me.publicKey);
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.cert);
    const agent = agentAs(investigator);
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    agent.close();
    const opened = open(result!, envelope, me.privateKey, req.requestId);
    expect(opened.outcome).toBe("ok");
    expect(opened.hostDiagnostics!.loadAverage).toHaveLength(3);
    expect(opened.hostDiagnostics!.processes.map((p) => p.vmId)).toContain(vmId);
    const other = generateX25519KeyPair();
    expect(() => open(result!, envelope, other.privateKey, req.requestId)).toThrow(expect.objectContaining({ reason: "RESULT_SEAL_INVALID" }));
  });

  it("carried: a technician who may only carry submits the investigator's request and cannot open the result", async () => {
    const investigatorKey = generateX25519KeyPair();
    const req = request({ queryHypervisor: { vmId } }, investigatorKey.publicKey);
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.cert);
    const carrier = agentAs(technician);
    const { result } = await carrier.submit({ requestId: req.requestId, envelope });
    carrier.close();
    const technicianKey = generateX25519KeyPair();
    expect(() => open(result!, envelope, technicianKey.privateKey, req.requestId)).toThrow(expect.objectContaining({ reason: "RESULT_SEAL_INVALID" }));
    expect(open(result!, envelope, investigatorKey.privateKey, req.requestId).hypervisorStatus).toMatchObject({ vmId, running: true });
  });

  it("encrypted: a request sealed to the host's published key runs there and nowhere else", async () => {
    const me = generateX25519KeyPair();
    const req = request({ stopGuest: { vmId, timeoutSeconds: 5, force: false } }, me.publicKey);
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.cert);
    const sealed = sealPrivilegedRequest(envelope, HOST, hostSealing);
    const carrier = agentAs(technician);
    try {
      const { result } = await carrier.submit({ requestId: req.requestId, sealed });
      expect(open(result!, envelope, me.privateKey, req.requestId).guestState).toMatchObject({ vmId, state: "STOPPED" });
      const otherHost = generateX25519KeyPair();
      const wrong = sealPrivilegedRequest(signPrivilegedRequest(request({ startGuest: { vmId } }, me.publicKey), investigator.key, investigator.cert), HOST, otherHost.publicKey);
      expect((await refused(carrier.submit({ requestId: "x", sealed: wrong }))).reason).toBe("SEALED_REQUEST_INVALID");
      const forOther = sealPrivilegedRequest(envelope, "dev-host-2", hostSealing);
      expect((await refused(carrier.submit({ requestId: "y", sealed: forOther }))).reason).toBe("HOST_MISMATCH");
    } finally {
      const start = request({ startGuest: { vmId } }, me.publicKey);
      await carrier.submit({ requestId: start.requestId, envelope: signPrivilegedRequest(start, investigator.key, investigator.cert) });
      carrier.close();
    }
  });

  it("patches the agent's runtime config by allow-list and reverts it", async () => {
    const me = generateX25519KeyPair();
    const agent = agentAs(investigator);
    try {
      const set = request({ applyConfigPatch: { key: "log_level", value: "debug", revertOf: "" } }, me.publicKey);
      const e1 = signPrivilegedRequest(set, investigator.key, investigator.cert);
      const patched = open((await agent.submit({ requestId: set.requestId, envelope: e1 })).result!, e1, me.privateKey, set.requestId).configPatch!;
      expect(patched).toMatchObject({ key: "log_level", previousValue: "debug", value: "debug" });
      const back = request({ applyConfigPatch: { key: "", value: "", revertOf: patched.patchId } }, me.publicKey);
      const e2 = signPrivilegedRequest(back, investigator.key, investigator.cert);
      expect(open((await agent.submit({ requestId: back.requestId, envelope: e2 })).result!, e2, me.privateKey, back.requestId).configPatch!.revertedPatchId).toBe(patched.patchId);
      const bad = request({ applyConfigPatch: { key: "allow_everything", value: "yes", revertOf: "" } }, me.publicKey);
      expect((await refused(agent.submit({ requestId: bad.requestId, envelope: signPrivilegedRequest(bad, investigator.key, investigator.cert) }))).reason).toBe("CONFIG_KEY_NOT_ALLOWED");
    } finally {
      agent.close();
    }
  });
});

describe("lifecycle operations and per-key limits", () => {
  it("terminates a guest through the control plane, but not for a key limited to start/stop", async () => {
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const doomed = (await vms.createVm({ requestId: "priv-doomed", name: "doomed", image: "process", resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } })).vm!.vmId;
    for (let i = 0; i < 200 && (await vms.getVm({ vmId: doomed })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 25));
    vms.close();
    const me = generateX25519KeyPair();
    const startStop = await operator("support-start-stop", ["lifecycle"], { options: [{ name: "operations", value: "start_guest,stop_guest", critical: true }] });
    const limited = agentAs(startStop);
    const denied = signPrivilegedRequest(request({ terminateGuest: { vmId: doomed } }, me.publicKey), startStop.key, startStop.cert);
    const err = await refused(limited.submit({ requestId: "t1", envelope: denied }));
    limited.close();
    expect([err.status, err.reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    const agent = agentAs(investigator);
    const req = request({ terminateGuest: { vmId: doomed } }, me.publicKey);
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.cert);
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    agent.close();
    expect(open(result!, envelope, me.privateKey, req.requestId).guestState).toMatchObject({ vmId: doomed, state: "TERMINATED" });
  });
});

describe("privileged refusals (nothing runs)", () => {
  const me = generateX25519KeyPair();
  const diag = () => request({ collectHostDiagnostics: {} }, me.publicKey);
  async function submitAs(op: Operator, envelope: SignedEnvelope, carrier: Operator = op) {
    const agent = agentAs(carrier);
    try {
      return await refused(agent.submit({ requestId: "refusal", envelope }));
    } finally {
      agent.close();
    }
  }

  it("an expired request", async () => {
    const req = diag();
    const e = signPrivilegedRequest({ ...req, notBeforeMs: Date.now() - 10 * 60_000, notAfterMs: Date.now() - 6 * 60_000 }, investigator.key, investigator.cert);
    expect((await submitAs(investigator, e)).reason).toBe("REQUEST_EXPIRED");
  });

  it("a future-dated request", async () => {
    const req = diag();
    const e = signPrivilegedRequest({ ...req, notBeforeMs: Date.now() + 10 * 60_000, notAfterMs: Date.now() + 12 * 60_000 }, investigator.key, investigator.cert);
    expect((await submitAs(investigator, e)).reason).toBe("REQUEST_NOT_YET_VALID");
  });

  it("a window longer than five minutes", async () => {
    const e = signPrivilegedRequest({ ...diag(), notAfterMs: Date.now() + 60 * 60_000 }, investigator.key, investigator.cert);
    expect((await submitAs(investigator, e)).reason).toBe("REQUEST_WINDOW_INVALID");
  });

  it("a replayed nonce (another request under it), while a retry of the same envelope gets the same result", async () => {
    const req = diag();
    const e = signPrivilegedRequest(req, investigator.key, investigator.cert);
    const agent = agentAs(investigator);
    const first = (await agent.submit({ requestId: "once", envelope: e })).result!;
    // A retry after a lost answer: the stored sealed result, not a second execution.
    expect((await agent.submit({ requestId: "once-retry", envelope: e })).result).toEqual(first);
    agent.close();
    const sameNonce = signPrivilegedRequest({ ...req, justification: "replayed" }, investigator.key, investigator.cert);
    expect((await submitAs(investigator, sameNonce)).reason).toBe("NONCE_REPLAYED");
  });

  it("binds the result to the envelope bytes the host received, not a re-encoding", async () => {
    const req = diag();
    // The envelope with an unknown field appended: still validly signed, but not canonical.
    const received = Buffer.concat([SignedEnvelope.encode(signPrivilegedRequest(req, investigator.key, investigator.cert)).finish(), Buffer.from([0x78, 0x01])]);
    const raw = Buffer.concat([SubmitRequest.encode({ requestId: req.requestId }).finish(), new BinaryWriter().uint32(18).bytes(received).finish()]);
    const rawSubmit = { submit: { ...PrivilegedServiceService.submit, requestType: { fromPartial: (p: unknown) => p } } };
    const agent = createClient(rawSubmit, env.dev.agent.address, { key: investigator.key, certificate: investigator.cert, targetHost: HOST });
    const { result } = await agent.submit(raw as never);
    agent.close();
    const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: received, hostKey, hostId: HOST, requestId: req.requestId });
    expect(Buffer.from(opened.requestDigest).equals(createHash("sha256").update(received).digest())).toBe(true);
  });

  it("a request for another host", async () => {
    const e = signPrivilegedRequest({ ...diag(), hostId: "dev-host-2" }, investigator.key, investigator.cert);
    expect((await submitAs(investigator, e)).reason).toBe("HOST_MISMATCH");
  });

  it("a tampered operation or argument", async () => {
    const e = signPrivilegedRequest(request({ stopGuest: { vmId, timeoutSeconds: 5, force: false } }, me.publicKey), investigator.key, investigator.cert);
    const req = PrivilegedRequest.decode(e.payload);
    const tampered = { ...e, payload: PrivilegedRequest.encode({ ...req, stopGuest: undefined, terminateGuest: { vmId } }).finish() };
    // Carried: the carrier's own call signature vouches for nothing the signer said.
    expect((await submitAs(investigator, tampered, technician)).reason).toBe("SIGNATURE_INVALID");
  });

  it("a tampered request its own signer submits sealed (the call digest covers only the ciphertext)", async () => {
    const e = signPrivilegedRequest(diag(), investigator.key, investigator.cert);
    const forged = { ...e, signatures: [{ ...e.signatures[0]!, sig: new Uint8Array(64) }] };
    const agent = agentAs(investigator);
    try {
      const err = await refused(agent.submit({ requestId: "sealed-forged", sealed: sealPrivilegedRequest(forged, HOST, hostSealing) }));
      expect(err.reason).toBe("SIGNATURE_INVALID");
    } finally {
      agent.close();
    }
  });

  it("a recipient key swapped by the carrier", async () => {
    const e = signPrivilegedRequest(diag(), investigator.key, investigator.cert);
    const thief = generateX25519KeyPair();
    const swapped = { ...e, payload: PrivilegedRequest.encode({ ...PrivilegedRequest.decode(e.payload), recipientPublicKey: thief.publicKey }).finish() };
    expect((await submitAs(investigator, swapped, technician)).reason).toBe("SIGNATURE_INVALID");
  });

  it("a certificate for another host pattern", async () => {
    const prod = await operator("prod-operator", ["inspect"], { hostPattern: "prod-*" });
    const e = signPrivilegedRequest(diag(), prod.key, prod.cert);
    expect((await submitAs(prod, e, technician)).reason).toBe("HOST_MISMATCH");
  });

  it("an expired certificate", async () => {
    const shortLived = await operator("short-lived", ["inspect"], { ttl: 1 });
    const e = signPrivilegedRequest(diag(), shortLived.key, shortLived.cert);
    await new Promise((r) => setTimeout(r, 1300));
    expect((await submitAs(shortLived, e, technician)).reason).toBe("CERTIFICATE_EXPIRED");
  });

  it("an unknown critical restriction", async () => {
    const odd = await operator("odd", ["inspect"], { options: [{ name: "only-on-tuesdays", value: "", critical: true }] });
    const e = signPrivilegedRequest(diag(), odd.key, odd.cert);
    expect((await submitAs(odd, e, technician)).reason).toBe("CERTIFICATE_INVALID");
  });

  it("an operation class the certificate does not allow (support reading host data)", async () => {
    const e = signPrivilegedRequest(diag(), support.key, support.cert);
    const err = await submitAs(support, e);
    expect([err.status, err.reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
  });

  it("a carrier without the carry class", async () => {
    const e = signPrivilegedRequest(request({ startGuest: { vmId } }, me.publicKey), investigator.key, investigator.cert);
    expect((await submitAs(investigator, e, support)).reason).toBe("POLICY_DENIED");
  });

  it("a truncated or spliced sealed result on opening", async () => {
    const a = diag();
    const ea = signPrivilegedRequest(a, investigator.key, investigator.cert);
    const b = diag();
    const eb = signPrivilegedRequest(b, investigator.key, investigator.cert);
    const agent = agentAs(investigator);
    const ra = (await agent.submit({ requestId: a.requestId, envelope: ea })).result!;
    const rb = (await agent.submit({ requestId: b.requestId, envelope: eb })).result!;
    agent.close();
    const truncated = { ...ra, ciphertext: ra.ciphertext.slice(0, ra.ciphertext.length - 5) };
    expect(() => open(truncated, ea, me.privateKey, a.requestId)).toThrow(expect.objectContaining({ reason: "RESULT_SEAL_INVALID" }));
    const spliced = { ...rb, hostId: ra.hostId, requestId: ra.requestId };
    expect(() => open(spliced, ea, me.privateKey, a.requestId)).toThrow(expect.objectContaining({ reason: "RESULT_SEAL_INVALID" }));
    expect(createHash("sha256").update(ra.ciphertext).digest("hex")).not.toBe(createHash("sha256").update(rb.ciphertext).digest("hex"));
  });
});
