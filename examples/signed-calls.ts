// Example flow: every call is signed by the SDK and verified by the server before decoding.
// Shows a verified echo, a least-privilege principal denied by policy, a replayed signed call
// refused, an idempotent retry, and the audit chain that recorded all of it.
import * as grpc from "@grpc/grpc-js";
import { canonicalEncode, generateSigningKey, signCall } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { AuthServiceService, EchoRequest, PolicyEffect } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

/** Sends pre-built bytes and metadata, as an attacker replaying a captured call would. */
function sendRaw(address: string, method: string, bytes: Uint8Array, metadata: grpc.Metadata): Promise<void> {
  const c = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise<void>((resolve, reject) => {
    c.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), metadata, (err) => {
      c.close();
      if (!err) return resolve();
      const reason = err.metadata?.get("tp-reason")[0]?.toString() ?? "";
      reject(new TrustplaneError(grpc.status[err.code] as never, reason, err.details));
    });
  });
}

async function expectRefusal(p: Promise<unknown>): Promise<TrustplaneError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TrustplaneError) return e;
    throw e;
  }
  throw new Error("expected the server to refuse this call, but it succeeded");
}

export const signedCallsFlow: ExampleFlow = {
  name: "signed-calls",
  title: "Signed calls: verify, deny by policy, refuse a replay, retry idempotently, audit",
  async run(ctx: TourContext) {
    const admin = createClient(AuthServiceService, ctx.server, { key: ctx.admin });
    const aliceKey = generateSigningKey("Ed25519");
    const alice = createClient(AuthServiceService, ctx.server, { key: aliceKey });
    try {
      const echo = await admin.echo({ message: "hello, trustplane" });
      ctx.say(`admin echo verified: principal=${echo.principal} key=${echo.keyId.slice(0, 12)}…`);

      const name = `alice-${Date.now().toString(36)}`;
      const create = { requestId: `demo-create-${name}`, name, kind: "user", policy: { rules: [{ methods: ["/trustplane.auth.v1.AuthService/Echo"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } };
      await admin.createPrincipal(create);
      const again = await admin.createPrincipal(create);
      ctx.say(`created principal ${name}; the retry with the same request_id returned the stored result (${again.principal?.name})`);
      await admin.addKey({ requestId: `demo-key-${aliceKey.keyId}`, principal: name, jwk: JSON.stringify(aliceKey.publicJwk) });
      const hers = await alice.echo({ message: "hi" });
      ctx.say(`${name} may Echo: verified as ${hers.principal}`);
      const denied = await expectRefusal(alice.createPrincipal({ requestId: "demo-escalate", name: "mallory", kind: "user" }));
      ctx.say(`${name} may not CreatePrincipal: ${denied.status} ${denied.reason}`);

      const method = AuthServiceService.echo.path;
      const bytes = canonicalEncode(EchoRequest, { message: "pay bob 10" });
      const s = signCall({ method, requestBytes: bytes, key: aliceKey });
      const md = new grpc.Metadata();
      md.set("tp-statement-bin", Buffer.from(s.statement));
      md.set("tp-signature-bin", Buffer.from(s.signature));
      md.set("tp-key-id", s.keyId);
      await sendRaw(ctx.server, method, bytes, md);
      const replay = await expectRefusal(sendRaw(ctx.server, method, bytes, md));
      ctx.say(`captured call replayed verbatim: ${replay.status} ${replay.reason}`);
      const tampered = canonicalEncode(EchoRequest, { message: "pay bob 1000" });
      const md2 = md.clone();
      const s2 = signCall({ method, requestBytes: bytes, key: aliceKey });
      md2.set("tp-statement-bin", Buffer.from(s2.statement));
      md2.set("tp-signature-bin", Buffer.from(s2.signature));
      const tamper = await expectRefusal(sendRaw(ctx.server, method, tampered, md2));
      ctx.say(`argument changed after signing: ${tamper.status} ${tamper.reason}`);

      const audit = await admin.verifyAudit({});
      ctx.say(`audit log: ${audit.records} hash-chained records, chain ${audit.ok ? "intact" : `BROKEN at ${audit.brokenAtSeq}`}`);
      if (!audit.ok) throw new Error(`audit chain broken: ${audit.problem}`);
    } finally {
      admin.close();
      alice.close();
    }
  },
};

if (process.argv[1]?.endsWith("signed-calls.ts")) {
  await signedCallsFlow.run(standaloneContext());
}
