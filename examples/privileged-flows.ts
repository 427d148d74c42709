// Example flows for privileged operations (seed 002): direct, carried by an untrusted
// technician, and sealed so the carrier cannot even read the request. Every result is signed
// by the host and sealed to the requester's key before it leaves the host.
import { createClient } from "../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../sdk/src/envelope/index.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { SignedEnvelope } from "../sdk/src/gen/trustplane/auth/v1/auth.js";
import { PrivilegedServiceService } from "../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { buildPrivilegedRequest, openSealedResult, sealPrivilegedRequest, signPrivilegedRequest } from "../sdk/src/privileged/index.js";
import { certifiedOperator, hostKeys, type Operator } from "./privileged-support.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const HOST = "dev-host-1";

function agentAs(ctx: TourContext, op: Operator) {
  return createClient(PrivilegedServiceService, ctx.agent, { key: op.key, certificate: op.certificate, targetHost: HOST });
}

export const privilegedDirectFlow: ExampleFlow = {
  name: "privileged-direct",
  title: "Privileged (direct): a certified operator reads host diagnostics; the result is host-signed and sealed to them",
  async run(ctx) {
    const security = await certifiedOperator(ctx, "security-team", ["inspect", "memory", "lifecycle"]);
    const host = await hostKeys(ctx, HOST);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey, justification: "demo: host health" });
    const envelope = signPrivilegedRequest(req, security.key, security.certificate);
    const agent = agentAs(ctx, security);
    try {
      const { result } = await agent.submit({ requestId: req.requestId, envelope });
      ctx.say(`agent returned only a sealed result (${result!.ciphertext.length} bytes of HPKE ciphertext)`);
      const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: host.signing, hostId: HOST, requestId: req.requestId });
      const d = opened.hostDiagnostics!;
      ctx.say(`opened and verified the host's signature: load ${d.loadAverage.map((l) => l.toFixed(2)).join(" ")}, ${(d.memoryAvailableBytes / 2 ** 30).toFixed(1)} of ${(d.memoryTotalBytes / 2 ** 30).toFixed(1)} GiB free, ${d.processes.length} guest processes`);
      try {
        await agent.submit({ requestId: req.requestId, envelope });
      } catch (e) {
        ctx.say(`the same signed request again: ${(e as TrustplaneError).status} ${(e as TrustplaneError).reason}`);
      }
    } finally {
      agent.close();
    }
  },
};

export const privilegedCarriedFlow: ExampleFlow = {
  name: "privileged-carried",
  title: "Privileged (carried): an investigator signs ahead of time, an untrusted technician carries it, only the investigator can open the result",
  async run(ctx) {
    const investigator = await certifiedOperator(ctx, "investigator", ["inspect"]);
    const technician = await certifiedOperator(ctx, "technician", ["carry"]);
    const host = await hostKeys(ctx, HOST);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.certificate);
    const carrier = agentAs(ctx, technician);
    try {
      const { result } = await carrier.submit({ requestId: req.requestId, envelope });
      const stolen = generateX25519KeyPair();
      try {
        openSealedResult({ sealed: result!, recipientPrivateKey: stolen.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: host.signing, hostId: HOST, requestId: req.requestId });
      } catch (e) {
        ctx.say(`the technician cannot open what it carried: ${(e as TrustplaneError).reason}`);
      }
      const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: host.signing, hostId: HOST, requestId: req.requestId });
      ctx.say(`the investigator opened it: outcome ${opened.outcome}, kernel ${opened.hostDiagnostics!.kernel}`);
      const own = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: stolen.publicKey });
      try {
        await carrier.submit({ requestId: own.requestId, envelope: signPrivilegedRequest(own, technician.key, technician.certificate) });
      } catch (e) {
        ctx.say(`the technician's own request is refused: ${(e as TrustplaneError).status} ${(e as TrustplaneError).reason}`);
      }
    } finally {
      carrier.close();
    }
  },
};

export const privilegedEncryptedFlow: ExampleFlow = {
  name: "privileged-encrypted",
  title: "Privileged (encrypted): the request is sealed to the host's published key, so the carrier cannot read its parameters",
  async run(ctx) {
    const investigator = await certifiedOperator(ctx, "investigator", ["inspect"]);
    const technician = await certifiedOperator(ctx, "technician", ["carry"]);
    const host = await hostKeys(ctx, HOST);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, investigator.key, investigator.certificate);
    const sealed = sealPrivilegedRequest(envelope, HOST, host.sealing);
    ctx.say(`request sealed to ${HOST}'s X25519 key (CA-signed binding): the carrier holds ${sealed.ciphertext.length} opaque bytes`);
    const carrier = agentAs(ctx, technician);
    try {
      const { result } = await carrier.submit({ requestId: req.requestId, sealed });
      const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: host.signing, hostId: HOST, requestId: req.requestId });
      ctx.say(`${HOST} opened, verified and ran it; the investigator opened the result: outcome ${opened.outcome}`);
      try {
        await carrier.submit({ requestId: "elsewhere", sealed: { ...sealPrivilegedRequest(envelope, "dev-host-2", generateX25519KeyPair().publicKey) } });
      } catch (e) {
        ctx.say(`the same request sealed for another host is refused here: ${(e as TrustplaneError).reason}`);
      }
    } finally {
      carrier.close();
    }
  },
};

if (process.argv[1]?.endsWith("privileged-flows.ts")) {
  const ctx = standaloneContext();
  for (const f of [privilegedDirectFlow, privilegedCarriedFlow, privilegedEncryptedFlow]) await f.run(ctx);
}
