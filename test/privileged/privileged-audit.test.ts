// The privileged audit on the host and the server: every outcome (executed or denied) lands in
// the agent's hash-chained audit file, which no log level reaches, and is forwarded to the
// server's audit log at least once and recorded there once. The server checks each host's
// chain; the forwarder queues while the server is down and resends after a restart.
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, importVerificationKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService, type AuditRecord } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HostAuditRecord, PrivilegedAuditServiceService, PrivilegedServiceService, type RecordHostAuditRequest } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { buildPrivilegedRequest, openSealedResult, signPrivilegedRequest, type PrivilegedOperation } from "../../sdk/src/privileged/index.js";
import { HostAuditFile } from "../../server/src/privileged/audit/host-audit-file.js";
import { HostAuditForwarder } from "../../server/src/privileged/audit/host-audit-forwarder.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const HOST = "dev-host-1";
let env: DevEnv;
const tmp = mkdtempSync(path.join(os.tmpdir(), "tp-paudit-"));

interface Operator {
  name: string;
  key: SigningKey;
  cert: Uint8Array;
}

async function operator(name: string, classes: string[]): Promise<Operator> {
  const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
  try {
    await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user" });
    const key = generateSigningKey();
    const { certificate } = await auth.issueCertificate({ requestId: `c-${name}`, principal: name, publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: classes, hostPattern: HOST, ttlSeconds: 600 });
    return { name, key, cert: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}

async function submit(op: Operator, operation: Partial<PrivilegedOperation>) {
  const me = generateX25519KeyPair();
  const req = buildPrivilegedRequest({ hostId: HOST, operation, recipientPublicKey: me.publicKey });
  const envelope = signPrivilegedRequest(req, op.key, op.cert);
  const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: op.key, certificate: op.cert, targetHost: HOST });
  try {
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    return { req, result: openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: importVerificationKey(env.dev.agent.signingKey.publicJwk), hostId: HOST, requestId: req.requestId }) };
  } catch (e) {
    if (e instanceof TrustplaneError) return { req, error: e };
    throw e;
  } finally {
    agent.close();
  }
}

async function serverAudit(): Promise<AuditRecord[]> {
  const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
  try {
    return (await auth.listAuditRecords({ afterSeq: 0, pageSize: 1000 })).records;
  } finally {
    auth.close();
  }
}

/** The server's audit record of a privileged request, once the agent has forwarded it. */
async function forwarded(requestId: string, outcome: string): Promise<AuditRecord> {
  for (let i = 0; i < 200; i++) {
    const rec = (await serverAudit()).find((r) => r.requestId === requestId && r.action.startsWith("privileged.") && r.outcome === outcome);
    if (rec) return rec;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no server audit record for ${requestId} with outcome ${outcome}`);
}

const auditFile = () => path.join(env.config.dataDir, "agent", HOST, "privileged-audit.jsonl");
const localRecords = () =>
  readFileSync(auditFile(), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { seq: number; requestId: string; outcome: string; signer: string });

beforeAll(async () => {
  env = await startDevEnv();
});
afterAll(async () => {
  await env?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("privileged audit on the host and the server", () => {
  it("records a denial in the server's audit log under the operator's principal", async () => {
    const support = await operator("support", ["lifecycle"]);
    const { req, error } = await submit(support, { collectHostDiagnostics: {} });
    expect(error?.reason).toBe("POLICY_DENIED");
    const rec = await forwarded(req.requestId, "POLICY_DENIED");
    expect(rec).toMatchObject({ principal: "support", action: "privileged.collect_host_diagnostics", target: HOST });
    expect(JSON.parse(rec.detailJson)).toMatchObject({ hostId: HOST, carrier: "support", signer: "support" });
    expect(localRecords().some((r) => r.requestId === req.requestId && r.outcome === "POLICY_DENIED")).toBe(true);
    // The server's chain still verifies with the forwarded records in it.
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    expect((await auth.verifyAudit({})).ok).toBe(true);
    auth.close();
  });

  it("keeps auditing after log_level=warn, which quiets the whole agent's logging", async () => {
    const admin = await operator("patcher", ["patch", "inspect"]);
    const set = await submit(admin, { applyConfigPatch: { key: "log_level", value: "warn", revertOf: "" } });
    expect(set.result?.configPatch?.value).toBe("warn");
    // A patch has effects: its attempt reached the server's log before its outcome did.
    const attempt = await forwarded(set.req.requestId, "attempt");
    expect(attempt.seq).toBeLessThan((await forwarded(set.req.requestId, "ok")).seq);
    const mark = env.logs().length;
    const after = await submit(admin, { collectHostDiagnostics: {} });
    expect(after.result?.outcome).toBe("ok");
    expect((await forwarded(after.req.requestId, "ok")).principal).toBe("patcher");
    expect(localRecords().some((r) => r.requestId === after.req.requestId && r.outcome === "ok")).toBe(true);
    // No info line from the agent since: its per-call loggers and area loggers all follow the patch.
    const agentInfo = env
      .logs()
      .slice(mark)
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { level: number; process?: string })
      .filter((l) => l.process === "agent" && l.level < 40);
    expect(agentInfo).toEqual([]);
    const back = await submit(admin, { applyConfigPatch: { key: "", value: "", revertOf: set.result!.configPatch!.patchId } });
    expect(back.result?.configPatch?.value).toBe("debug");
  });

  it("refuses a log_level that is not one (CONFIG_VALUE_INVALID) and audits the refusal", async () => {
    const admin = await operator("patcher-2", ["patch"]);
    const bad = await submit(admin, { applyConfigPatch: { key: "log_level", value: "whisper", revertOf: "" } });
    expect([bad.error?.status, bad.error?.reason]).toEqual(["INVALID_ARGUMENT", "CONFIG_VALUE_INVALID"]);
    expect(bad.error?.message).toContain("must be one of");
    await forwarded(bad.req.requestId, "CONFIG_VALUE_INVALID");
  });

  it("has the server check each host's chain: a resend is acknowledged, a rewrite or gap refused", async () => {
    const host = createClient(PrivilegedAuditServiceService, env.dev.server.address, { key: env.dev.agent.signingKey, certificate: Buffer.from(env.dev.agent.identity.hostCertificate, "base64") });
    try {
      const local = readFileSync(auditFile(), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
      // Let the agent's own forwarding of earlier records settle first.
      for (let i = 0; i < 200 && (await serverAudit()).filter((r) => r.action.startsWith("privileged.")).length < local.length; i++) await new Promise((r) => setTimeout(r, 25));
      const asRecord = (l: Record<string, unknown>) =>
        HostAuditRecord.fromPartial({ ...l, prevHash: Buffer.from(l.prevHash as string, "hex"), hash: Buffer.from(l.hash as string, "hex"), requestNonce: Buffer.from((l.requestNonce as string) ?? "", "hex") });
      const first = asRecord(local[0]!);
      const before = (await serverAudit()).length;
      const send = (records: HostAuditRecord[], id: string, hostId = HOST): Promise<unknown> =>
        host.recordHostAudit({ requestId: id, hostId, records } satisfies RecordHostAuditRequest).catch((e: TrustplaneError) => e);
      expect(await send([first], "resend-1")).toMatchObject({ recordedThroughSeq: expect.any(Number) });
      expect((await serverAudit()).length).toBe(before);
      expect(await send([{ ...first, outcome: "ok-but-rewritten" }], "rewrite-1")).toMatchObject({ reason: "AUDIT_RECORD_CONFLICT" });
      const head = asRecord(local.at(-1)!);
      expect(await send([{ ...head, seq: head.seq + 5 }], "gap-1")).toMatchObject({ reason: "AUDIT_GAP" });
      expect(await send([{ ...head, seq: head.seq + 1, prevHash: head.hash, hash: new Uint8Array(32) }], "broken-1")).toMatchObject({ reason: "AUDIT_CHAIN_BROKEN" });
      expect(await send([first], "other-host", "dev-host-2")).toMatchObject({ status: "PERMISSION_DENIED", reason: "HOST_MISMATCH" });
    } finally {
      host.close();
    }
  });
});

describe("the agent's audit file and forwarder", () => {
  const entry = (n: number) => ({ requestId: `r${n}`, operation: "collect_host_diagnostics", signer: "s", carrier: "c", outcome: "ok", detail: "", vmId: "" });

  it("cuts a torn last line and refuses to start on an edited record", async () => {
    const file = path.join(tmp, "a.jsonl");
    const a = HostAuditFile.open(file);
    await a.append(entry(1));
    await a.append(entry(2));
    a.close();
    appendFileSync(file, '{"seq":3,"timeMs":1');
    const b = HostAuditFile.open(file);
    expect(b.lastSeq).toBe(2);
    expect((await b.append(entry(3))).seq).toBe(3);
    b.close();
    expect(HostAuditFile.open(file).takeRecords().map((r) => r.requestId)).toEqual(["r1", "r2", "r3"]);
    writeFileSync(file, readFileSync(file, "utf8").replace('"requestId":"r2"', '"requestId":"rX"'));
    expect(() => HostAuditFile.open(file)).toThrow(expect.objectContaining({ reason: "AUDIT_CHAIN_BROKEN" }));
  });

  it("keeps the spent nonce of a record across a reopen, and reads files written before records had one", async () => {
    const file = path.join(tmp, "n.jsonl");
    const a = HostAuditFile.open(file);
    await a.append(entry(1));
    const nonce = new Uint8Array(16).fill(7);
    await a.append({ ...entry(2), requestNonce: nonce, replayUntilMs: 1234 });
    a.close();
    // A line as the previous release wrote it: no requestNonce member at all.
    const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
    const old = JSON.parse(lines[0]!) as Record<string, unknown>;
    delete old.requestNonce;
    writeFileSync(file, [JSON.stringify(old), lines[1]!, ""].join("\n"));
    const b = HostAuditFile.open(file);
    const records = b.takeRecords();
    expect(records.map((r) => [Buffer.from(r.requestNonce).toString("hex"), r.replayUntilMs])).toEqual([
      ["", 0],
      ["07".repeat(16), 1234],
    ]);
    expect((await b.append(entry(3))).seq).toBe(3);
    b.close();
  });

  it("forwards a burst of records in one call", async () => {
    const log = HostAuditFile.open(path.join(tmp, "burst.jsonl"));
    const calls: number[][] = [];
    const sink = {
      async recordHostAudit(req: RecordHostAuditRequest) {
        calls.push(req.records.map((r) => r.seq));
        return { recordedThroughSeq: req.records.at(-1)!.seq };
      },
    };
    const fwd = new HostAuditForwarder({ hostId: "h", sink, cursorFile: path.join(tmp, "burst.cursor"), logger: createLogger({ level: "silent" }) });
    await Promise.all([1, 2, 3, 4].map(async (i) => fwd.enqueue([await log.append(entry(i))])));
    expect(await fwd.drain(2000)).toBe(true);
    expect(calls).toEqual([[1, 2, 3, 4]]);
    expect(readFileSync(path.join(tmp, "burst.cursor"), "utf8").trim()).toBe("4");
    fwd.stop();
    log.close();
  });

  it("queues while the server is down, loses nothing, and resends what was not acknowledged after a restart", async () => {
    const file = path.join(tmp, "b.jsonl");
    const cursorFile = path.join(tmp, "b.cursor");
    const log = HostAuditFile.open(file);
    let down = true;
    const received: number[] = [];
    const sink = {
      async recordHostAudit(req: RecordHostAuditRequest) {
        if (down) throw new TrustplaneError("UNAVAILABLE", "UNAVAILABLE", "server down");
        for (const r of req.records) if (!received.includes(r.seq)) received.push(r.seq);
        return { recordedThroughSeq: req.records.at(-1)!.seq };
      },
    };
    const logger = createLogger({ level: "silent" });
    const fwd = new HostAuditForwarder({ hostId: "h", sink, cursorFile, logger, minBackoffMs: 10, maxBackoffMs: 20 });
    for (let i = 1; i <= 5; i++) fwd.enqueue([await log.append(entry(i))]);
    await new Promise((r) => setTimeout(r, 60));
    expect(fwd.backlog).toBe(5);
    down = false;
    expect(await fwd.drain(2000)).toBe(true);
    expect(received).toEqual([1, 2, 3, 4, 5]);
    // Two more while the server is down, then the agent stops before they go out.
    down = true;
    for (let i = 6; i <= 7; i++) fwd.enqueue([await log.append(entry(i))]);
    fwd.stop();
    log.close();
    down = false;
    const restarted = new HostAuditForwarder({ hostId: "h", sink, cursorFile, logger, minBackoffMs: 10 });
    expect(restarted.acknowledgedSeq).toBe(5);
    restarted.enqueue(HostAuditFile.open(file).takeRecords());
    expect(await restarted.drain(2000)).toBe(true);
    expect(received).toEqual([1, 2, 3, 4, 5, 6, 7]);
    restarted.stop();
  });
});
