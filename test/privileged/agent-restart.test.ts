// Replay across an agent restart (seed 002: each request runs once) on a real `trustplane dev`
// stopped and started again on the same data directory: the privileged replay cache is rebuilt
// from the agent's audit file, and a call statement the previous run may have seen is refused.
import { NONCE_SNAPSHOT_FILE } from "../../server/src/runtime/auth/nonce-snapshot-file.js";
import type { JsonWebKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, importSigningKey, importVerificationKey, signCall, CERTIFICATE_METADATA, KEY_ID_METADATA, SIGNATURE_METADATA, STATEMENT_METADATA, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { PrivilegedRequest, PrivilegedServiceService, SubmitRequest } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { buildPrivilegedRequest, openSealedResult, signPrivilegedRequest } from "../../sdk/src/privileged/index.js";
import { startDev, type DevHandle } from "../../server/src/processes/dev-process.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";

const HOST = "dev-host-1";
const SUBMIT = "/trustplane.privileged.v1.PrivilegedService/Submit";
const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-restart-"));
const config = loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "silent" } });
let dev: DevHandle;
let operator: { key: SigningKey; cert: Uint8Array };

const start = () => startDev(config, createLogger({ level: "silent" }));

beforeAll(async () => {
  dev = await start();
  const admin = importSigningKey(JSON.parse(readFileSync(dev.adminKeyFile, "utf8")) as JsonWebKey);
  const auth = createClient(AuthServiceService, dev.server.address, { key: admin });
  try {
    await auth.createPrincipal({ requestId: "p-investigator", name: "investigator", kind: "user" });
    const key = generateSigningKey("Ed25519");
    const { certificate } = await auth.issueCertificate({ requestId: "c-investigator", principal: "investigator", publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: ["inspect"], hostPattern: "dev-host-*", ttlSeconds: 600 });
    operator = { key, cert: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}, 60_000);

afterAll(async () => {
  await dev?.shutdown();
  rmSync(dataDir, { recursive: true, force: true });
});

const auditLines = () =>
  readFileSync(path.join(dataDir, "agent", HOST, "privileged-audit.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { requestId: string; outcome: string });

async function submit(envelope: SignedEnvelope, requestId: string) {
  const client = createClient(PrivilegedServiceService, dev.agent.address, { key: operator.key, certificate: operator.cert, targetHost: HOST });
  try {
    return await client.submit({ requestId, envelope });
  } finally {
    client.close();
  }
}

/** Exactly these bytes and this signed call statement, sent as they are. */
function rawSubmit(bytes: Uint8Array, md: grpc.Metadata): Promise<{ err?: grpc.ServiceError }> {
  const client = new grpc.Client(dev.agent.address, grpc.credentials.createInsecure());
  return new Promise((resolve) =>
    client.makeUnaryRequest(SUBMIT, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), md, {}, (err) => {
      client.close();
      resolve(err ? { err } : {});
    }),
  );
}

const reasonOf = (err: grpc.ServiceError | undefined) => err?.metadata.get("tp-reason")[0];

describe("replay across an agent restart", () => {
  const me = generateX25519KeyPair();
  let request: SignedEnvelope;
  let capturedCall: { bytes: Uint8Array; md: grpc.Metadata };

  it("before the restart: a request runs, and a signed call is captured by someone on the path", async () => {
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
    request = signPrivilegedRequest(req, operator.key, operator.cert);
    const { result } = await submit(request, req.requestId);
    const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(request).finish(), hostKey: importVerificationKey(dev.agent.signingKey.publicJwk), hostId: HOST, requestId: req.requestId });
    expect(opened.outcome).toBe("ok");

    // A call the agent accepts but whose request spends no nonce (it is for another host).
    const other = signPrivilegedRequest(buildPrivilegedRequest({ hostId: "dev-host-2", operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey }), operator.key, operator.cert);
    const bytes = SubmitRequest.encode({ requestId: "captured", envelope: other }).finish();
    const s = signCall({ method: SUBMIT, requestBytes: bytes, key: operator.key, certificate: operator.cert, targetHost: HOST });
    const md = new grpc.Metadata();
    md.set(STATEMENT_METADATA, Buffer.from(s.statement));
    md.set(SIGNATURE_METADATA, Buffer.from(s.signature));
    md.set(KEY_ID_METADATA, s.keyId);
    md.set(CERTIFICATE_METADATA, Buffer.from(operator.cert));
    capturedCall = { bytes, md };
    expect(reasonOf((await rawSubmit(bytes, md)).err)).toBe("HOST_MISMATCH");
  });

  it("after the restart: the same request, under a fresh call signature, is refused (NONCE_REPLAYED) and does not run again", async () => {
    await dev.shutdown();
    dev = await start();
    const requestId = PrivilegedRequest.decode(request.payload).requestId;
    const e = await submit(request, requestId).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(TrustplaneError);
    expect((e as TrustplaneError).reason).toBe("NONCE_REPLAYED");
    expect(auditLines().filter((l) => l.requestId === requestId).map((l) => l.outcome)).toEqual(["ok", "NONCE_REPLAYED"]);
  }, 60_000);

  it("after a graceful restart: the captured call is NONCE_REPLAYED (the replay cache was handed over)", async () => {
    const { err } = await rawSubmit(capturedCall.bytes, capturedCall.md);
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "NONCE_REPLAYED"]);
  });

  it("after a crash (no hand-over): the captured call is refused (SIGNED_BEFORE_RESTART), while fresh calls pass", async () => {
    await dev.shutdown();
    // What a crash leaves: no snapshot of the in-memory replay cache, only the durable fence.
    rmSync(path.join(dataDir, "agent", HOST, NONCE_SNAPSHOT_FILE));
    dev = await start();
    const { err } = await rawSubmit(capturedCall.bytes, capturedCall.md);
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "SIGNED_BEFORE_RESTART"]);
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
    const { result } = await submit(signPrivilegedRequest(req, operator.key, operator.cert), req.requestId);
    expect(result?.requestId).toBe(req.requestId);
  });
});
