// Every rejection of the call verifier over a REAL grpc-js server on 127.0.0.1, asserting the
// gRPC status AND the stable reason code, plus the happy paths of all three algorithms,
// certificates, streams, UNIMPLEMENTED areas and idempotency.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type Algorithm } from "../../sdk/src/auth/index.js";
import { issueCertificate } from "../../sdk/src/auth/certificate.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { createSigningInterceptor } from "../../sdk/src/client/signing-interceptor.js";
import { signingServiceDefinition } from "../../sdk/src/client/signing-service.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import * as authV1 from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { AuthServiceService, EchoRequest } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { ECHO, Harness, NotYetVmService, StreamTestService, WHOAMI, reasonOf, signedMetadata } from "./signed-call-harness.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { bindService, messageAuthenticated } from "../../server/src/runtime/auth/service-binder.js";
import { createLogger } from "../../server/src/runtime/logger.js";

const alice = generateSigningKey();
let h: Harness;

beforeAll(async () => {
  h = await new Harness().start();
  h.register("alice", alice);
});
afterAll(async () => h.stop());

async function rejected(p: Promise<unknown>): Promise<TrustplaneError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(TrustplaneError);
    return e as TrustplaneError;
  }
  throw new Error("expected the call to be rejected");
}

const echoBytes = (message: string) => EchoRequest.encode({ message }).finish();

describe("accepted calls", () => {
  it.each<Algorithm>(["Ed25519", "ES256", "HS256"])("%s round-trips through the server", async (alg) => {
    const key = generateSigningKey(alg);
    h.register(`user-${alg}`, key);
    const client = createClient(AuthServiceService, h.address, { key });
    const res = await client.echo({ message: "hi" });
    expect(res).toMatchObject({ message: "hi", principal: `user-${alg}`, keyId: key.keyId });
    client.close();
  });

  it("a raw hand-signed call succeeds (baseline for the tampering tests)", async () => {
    const bytes = echoBytes("raw");
    const { err, res } = await h.rawUnary(ECHO, bytes, signedMetadata({ method: ECHO, requestBytes: bytes, key: alice }));
    expect(err).toBeUndefined();
    expect(authV1.EchoResponse.decode(res!).principal).toBe("alice");
  });
});

describe("rejections", () => {
  it("unsigned -> UNAUTHENTICATED MISSING_SIGNATURE", async () => {
    const { err } = await h.rawUnary(ECHO, echoBytes("x"), new grpc.Metadata());
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "MISSING_SIGNATURE"]);
  });

  it("tampered argument (signed one request, sent other bytes) -> DIGEST_MISMATCH", async () => {
    const signed = echoBytes("pay 10");
    const sent = echoBytes("pay 99");
    const { err } = await h.rawUnary(ECHO, sent, signedMetadata({ method: ECHO, requestBytes: signed, key: alice }));
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "DIGEST_MISMATCH"]);
  });

  it("flipped byte on the wire -> DIGEST_MISMATCH", async () => {
    const bytes = Buffer.from(echoBytes("hello"));
    const md = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice });
    bytes[bytes.length - 1]! ^= 1;
    const { err } = await h.rawUnary(ECHO, bytes, md);
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "DIGEST_MISMATCH"]);
  });

  it("tampered method (statement for Echo replayed on WhoAmI) -> METHOD_MISMATCH", async () => {
    const bytes = echoBytes("");
    const { err } = await h.rawUnary(WHOAMI, bytes, signedMetadata({ method: ECHO, requestBytes: bytes, key: alice }));
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "METHOD_MISMATCH"]);
  });

  it("skewed clock either way -> TIMESTAMP_SKEW", async () => {
    for (const offset of [-301_000, 301_000]) {
      const client = createClient(AuthServiceService, h.address, { key: alice, now: () => Date.now() + offset });
      const e = await rejected(client.echo({ message: "x" }));
      expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "TIMESTAMP_SKEW"]);
      client.close();
    }
    // Inside the window is fine.
    const ok = createClient(AuthServiceService, h.address, { key: alice, now: () => Date.now() - 250_000 });
    expect((await ok.echo({ message: "x" })).principal).toBe("alice");
    ok.close();
  });

  it("replayed call (same statement, nonce and bytes) -> NONCE_REPLAYED", async () => {
    const bytes = echoBytes("once");
    const md = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice });
    expect((await h.rawUnary(ECHO, bytes, md)).err).toBeUndefined();
    const { err } = await h.rawUnary(ECHO, bytes, md);
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "NONCE_REPLAYED"]);
  });

  it("a forged signature does not burn the victim's nonce", async () => {
    const bytes = echoBytes("n");
    const nonce = Buffer.alloc(16, 7);
    const md = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice, nonce });
    const forged = signedMetadata({ method: ECHO, requestBytes: bytes, key: generateSigningKey(), nonce });
    forged.set("tp-key-id", alice.keyId);
    const first = await h.rawUnary(ECHO, bytes, forged);
    expect(reasonOf(first.err)).toBe("SIGNATURE_INVALID");
    expect((await h.rawUnary(ECHO, bytes, md)).err).toBeUndefined();
  });

  it("bad signature or edited statement -> SIGNATURE_INVALID", async () => {
    const bytes = echoBytes("s");
    const md = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice });
    const sig = Buffer.from(md.get("tp-signature-bin")[0] as Buffer);
    sig[0]! ^= 1;
    md.set("tp-signature-bin", sig);
    const a = await h.rawUnary(ECHO, bytes, md);
    expect([a.err?.code, reasonOf(a.err)]).toEqual([grpc.status.UNAUTHENTICATED, "SIGNATURE_INVALID"]);
    const md2 = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice });
    const st = Buffer.from(md2.get("tp-statement-bin")[0] as Buffer);
    st[st.length - 1]! ^= 1;
    md2.set("tp-statement-bin", st);
    const b = await h.rawUnary(ECHO, bytes, md2);
    expect([b.err?.code, reasonOf(b.err)]).toEqual([grpc.status.UNAUTHENTICATED, "SIGNATURE_INVALID"]);
  });

  it("unknown key -> UNKNOWN_KEY", async () => {
    const client = createClient(AuthServiceService, h.address, { key: generateSigningKey() });
    const e = await rejected(client.echo({ message: "x" }));
    expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "UNKNOWN_KEY"]);
    client.close();
  });

  it("revoked key -> UNKNOWN_KEY, even with a valid certificate", async () => {
    const key = generateSigningKey();
    h.register("mallory", key, {}, true);
    const cert = SignedEnvelope.encode(
      issueCertificate(h.ca, { principal: "mallory", publicKeyJwk: JSON.stringify(key.publicJwk), notBeforeMs: Date.now() - 1000, notAfterMs: Date.now() + 60_000 }),
    ).finish();
    for (const certificate of [undefined, cert]) {
      const client = createClient(AuthServiceService, h.address, { key, certificate });
      const e = await rejected(client.echo({ message: "x" }));
      expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "UNKNOWN_KEY"]);
      expect(e.message).toContain("revoked");
      client.close();
    }
  });

  it("call bound to another host -> HOST_MISMATCH (control plane and host)", async () => {
    const client = createClient(AuthServiceService, h.address, { key: alice, targetHost: "host-a" });
    const e = await rejected(client.echo({ message: "x" }));
    expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "HOST_MISMATCH"]);
    client.close();

    const hostServer = await new Harness({ hostId: "host-a" }).start();
    hostServer.register("alice", alice);
    try {
      for (const targetHost of ["host-b", undefined]) {
        const c = createClient(AuthServiceService, hostServer.address, { key: alice, targetHost });
        const e2 = await rejected(c.echo({ message: "x" }));
        expect([e2.status, e2.reason]).toEqual(["UNAUTHENTICATED", "HOST_MISMATCH"]);
        c.close();
      }
      const good = createClient(AuthServiceService, hostServer.address, { key: alice, targetHost: "host-a" });
      expect((await good.echo({ message: "x" })).principal).toBe("alice");
      good.close();
    } finally {
      await hostServer.stop();
    }
  });

  it("policy denial -> PERMISSION_DENIED POLICY_DENIED, reported to onDenied", async () => {
    const bob = generateSigningKey();
    h.register("bob", bob, { rules: [{ methods: ["/trustplane.auth.v1.AuthService/*"], effect: "allow" }, { methods: [ECHO], effect: "deny" }] });
    const client = createClient(AuthServiceService, h.address, { key: bob });
    const e = await rejected(client.echo({ message: "x" }));
    expect([e.status, e.reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    expect(h.denied.at(-1)).toMatchObject({ method: ECHO, reason: "POLICY_DENIED", principal: "bob", keyId: bob.keyId });
    expect((await client.whoAmI({})).principal).toBe("bob");
    client.close();
  });

  it("stream digest mismatch on a client stream -> DIGEST_MISMATCH and nothing committed", async () => {
    const client = createClient(StreamTestService, h.address, { key: alice });
    expect(await client.upload([{ message: "a" }, { message: "b" }])).toMatchObject({ message: "a,b" });
    const before = h.commits.length;
    let pass = 0;
    // The factory form reads the stream twice; a second pass that differs is a tampered stream.
    const e = await rejected(
      client.upload(async function* () {
        pass++;
        yield { message: "a" };
        yield { message: pass === 1 ? "b" : "EVIL" };
      }),
    );
    expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "DIGEST_MISMATCH"]);
    expect(h.commits.length).toBe(before);
    expect(h.denied.at(-1)).toMatchObject({ method: StreamTestService.upload.path, reason: "DIGEST_MISMATCH", principal: "alice" });
    client.close();
  });

  it("client stream without a stream digest -> DIGEST_MISMATCH", async () => {
    const a = echoBytes("a");
    const md = signedMetadata({ method: StreamTestService.upload.path, requestBytes: a, key: alice });
    const { err } = await h.rawClientStream(StreamTestService.upload.path, [a, echoBytes("b")], md);
    expect([err?.code, reasonOf(err)]).toEqual([grpc.status.UNAUTHENTICATED, "DIGEST_MISMATCH"]);
  });
});

describe("certificates", () => {
  const holder = generateSigningKey("ES256");
  const cert = (ca = h.ca, notAfterMs = Date.now() + 60_000) =>
    SignedEnvelope.encode(
      issueCertificate(ca, { principal: "carol", publicKeyJwk: JSON.stringify(holder.publicJwk), notBeforeMs: Date.now() - 1000, notAfterMs }),
    ).finish();

  it("a CA-certified, unregistered key authenticates as the certificate's principal", async () => {
    h.policies.set("carol", { roles: [], rules: [{ methods: [ECHO], effect: "allow" }] });
    const client = createClient(AuthServiceService, h.address, { key: holder, certificate: cert() });
    expect(await client.echo({ message: "c" })).toMatchObject({ principal: "carol", keyId: holder.keyId });
    client.close();
  });

  it("an expired or foreign-CA certificate is refused", async () => {
    const expired = createClient(AuthServiceService, h.address, { key: holder, certificate: cert(h.ca, Date.now() - 500) });
    expect((await rejected(expired.echo({ message: "c" }))).reason).toBe("CERTIFICATE_EXPIRED");
    expired.close();
    const foreign = createClient(AuthServiceService, h.address, { key: holder, certificate: cert(generateSigningKey()) });
    const e = await rejected(foreign.echo({ message: "c" }));
    expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "CERTIFICATE_INVALID"]);
    foreign.close();
  });
});

describe("binder behaviour", () => {
  it("methods without a handler answer UNIMPLEMENTED naming the area", async () => {
    const vm = createClient(NotYetVmService, h.address, { key: alice });
    const e = await rejected(vm.createVm({ message: "x" }));
    expect([e.status, e.reason]).toEqual(["UNIMPLEMENTED", "AREA_NOT_IMPLEMENTED"]);
    expect(e.message).toContain("the vm area is not implemented yet");
    vm.close();
    const auth = createClient(AuthServiceService, h.address, { key: alice });
    const e2 = await rejected(auth.listHosts({}));
    expect([e2.status, e2.reason]).toEqual(["UNIMPLEMENTED", "AREA_NOT_IMPLEMENTED"]);
    expect(e2.message).toContain("the auth area");
    auth.close();
  });

  it("idempotent replay returns the stored response; a different request under the same id -> REQUEST_ID_REUSED", async () => {
    const client = createClient(AuthServiceService, h.address, { key: alice, types: authV1 });
    const runs = h.createPrincipalRuns;
    const req = { requestId: "req-1", name: "dave", roles: ["b", "a"], policy: { rules: [{ methods: ["*"] }] } };
    const first = await client.createPrincipal(req);
    const second = await client.createPrincipal(req);
    expect(h.createPrincipalRuns).toBe(runs + 1);
    expect(second).toEqual(first);
    const e = await rejected(client.createPrincipal({ ...req, name: "eve" }));
    expect([e.status, e.reason, e.field]).toEqual(["ALREADY_EXISTS", "REQUEST_ID_REUSED", "request_id"]);
    // Another principal's identical request id is its own scope.
    const frank = generateSigningKey();
    h.register("frank", frank);
    const other = createClient(AuthServiceService, h.address, { key: frank, types: authV1 });
    await other.createPrincipal({ ...req, name: "eve" });
    expect(h.createPrincipalRuns).toBe(runs + 2);
    client.close();
    other.close();
  });

  it("unexpected handler errors become INTERNAL with only a request id", async () => {
    const client = createClient(AuthServiceService, h.address, { key: alice });
    const e = await rejected(client.echo({ message: "boom" }));
    expect(e.status).toBe("INTERNAL");
    expect(e.message).toMatch(/^internal error \(request id [0-9a-f-]+\)$/);
    client.close();
  });

  it("server-streaming and bidi calls are signed and verified", async () => {
    const client = createClient(StreamTestService, h.address, { key: alice });
    const got: string[] = [];
    for await (const m of client.repeat({ message: "r" })) got.push(m.message);
    expect(got).toEqual(["r#0", "r#1", "r#2"]);
    const chat = client.chat({ message: "one" });
    chat.send({ message: "two" });
    chat.end();
    const replies: string[] = [];
    for await (const m of chat) replies.push(`${m.message}/${m.principal}`);
    expect(replies).toEqual(["ONE/alice", "TWO/alice"]);
    client.close();
  });

  it("refuses to bind a bidi handler that does not authenticate the messages after the first", () => {
    const runtime = { verifier: new CallVerifier({ keys: { resolve: async () => undefined }, caKeys: () => [], nonces: new MemoryNonceStore(), policy: { authorize: async () => true } }), logger: createLogger({ level: "silent" }) };
    const chat = async function* () {};
    expect(() => bindService(new grpc.Server(), StreamTestService, { chat }, runtime)).toThrow(expect.objectContaining({ reason: "STREAM_NOT_AUTHENTICATED" }));
    expect(() => bindService(new grpc.Server(), StreamTestService, { chat: messageAuthenticated(chat) }, runtime)).not.toThrow();
  });

  it("rejections reach streaming callers as TrustplaneError", async () => {
    const stranger = createClient(StreamTestService, h.address, { key: generateSigningKey() });
    const consume = async (it: AsyncIterable<unknown>) => {
      for await (const _ of it) void _;
    };
    for (const e of [await rejected(consume(stranger.repeat({ message: "x" }))), await rejected(consume(stranger.chat({ message: "x" })))]) {
      expect([e.status, e.reason]).toEqual(["UNAUTHENTICATED", "UNKNOWN_KEY"]);
    }
    stranger.close();
  });

  it("an empty client stream is signed and accepted", async () => {
    const client = createClient(StreamTestService, h.address, { key: alice });
    expect(await client.upload([])).toMatchObject({ message: "" });
    expect(h.commits.at(-1)).toEqual([]);
    client.close();
  });

  it("logs one line per call without metadata values", async () => {
    const bytes = echoBytes("log me");
    const md = signedMetadata({ method: ECHO, requestBytes: bytes, key: alice });
    await h.rawUnary(ECHO, bytes, md);
    const sig = (md.get("tp-signature-bin")[0] as Buffer).toString("base64");
    const line = h.logLines
      .map((l) => JSON.parse(l))
      .findLast((l) => l.msg === "call" && l.method === ECHO && l.status === "OK");
    expect(line).toMatchObject({ principal: "alice", keyId: alice.keyId });
    expect(typeof line.ms).toBe("number");
    expect(h.logLines.join("\n")).not.toContain(sig);
  });
});

describe("signing interceptor on plain grpc-js clients", () => {
  it("signs calls of the generated client, wrapped or not", async () => {
    const interceptor = createSigningInterceptor({ key: alice });
    const Wrapped = grpc.makeGenericClientConstructor(signingServiceDefinition(AuthServiceService), "AuthService");
    for (const client of [
      new authV1.AuthServiceClient(h.address, grpc.credentials.createInsecure(), { interceptors: [interceptor] }),
      new Wrapped(h.address, grpc.credentials.createInsecure(), { interceptors: [interceptor] }) as unknown as authV1.AuthServiceClient,
    ]) {
      const res = await new Promise<authV1.EchoResponse>((resolve, reject) =>
        client.echo(EchoRequest.fromPartial({ message: "plain" }), (err, r) => (err ? reject(err) : resolve(r))),
      );
      expect(res).toMatchObject({ message: "plain", principal: "alice" });
      client.close();
    }
  });
});
