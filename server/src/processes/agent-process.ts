// Wiring for `trustplane agent`: joins the server once with a join token (proving possession
// of a fresh host key), keeps its identity under <dataDir>/agent/<hostId>/ with mode 0600,
// and serves the agent-side services, trusting only callers certified by the server's CA.
import type { JsonWebKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { exportPrivateJwk, generateSigningKey, importSigningKey, importVerificationKey, type SigningKey, type VerificationKey } from "../../../sdk/src/auth/index.js";
import { createClient } from "../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { AuthServiceService } from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { SignedEnvelope } from "../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { CallVerifier } from "../runtime/auth/call-verifier.js";
import { openVolatileNonceStore } from "../runtime/auth/nonce-snapshot-file.js";
import { RulePolicyEngine } from "../runtime/auth/policy-engine.js";
import { bindService, type BindRuntime } from "../runtime/auth/service-binder.js";
import type { Config } from "../runtime/config.js";
import { GrpcServerHost } from "../runtime/grpc-server.js";
import { LogLevelControl } from "../runtime/log-level-control.js";
import { readJsonSecretFile, writeSecretFile } from "../runtime/key-file.js";
import type { Logger } from "../runtime/logger.js";
import { SERVER_PRINCIPAL } from "./server-keys.js";
import { importX25519Jwk } from "../../../sdk/src/envelope/index.js";
import { PRIVILEGED_CERTIFICATE_OPTIONS } from "../../../sdk/src/privileged/certificate-options.js";
import type { Bind, Running } from "./area.js";
import { AGENT_AREAS } from "./areas.js";
import { UNIMPLEMENTED_AGENT_SERVICES, serviceName } from "./service-catalog.js";

export interface AgentIdentity {
  hostId: string;
  serverAddress: string;
  caJwks: string[];
  /** Base64 of the SignedEnvelope certifying the host signing key. */
  hostCertificate: string;
  joinedAtMs: number;
}

export interface AgentHandle {
  address: string;
  identity: AgentIdentity;
  signingKey: SigningKey;
  shutdown(): Promise<void>;
}

export function defaultHostId(): string {
  return os.hostname().toLowerCase().replace(/[^a-z0-9.-]/g, "-").replace(/^[^a-z0-9]+/, "").slice(0, 63) || "host";
}

function x25519Jwk(key: KeyObject): JsonWebKey {
  return key.export({ format: "jwk" }) as JsonWebKey;
}

/** Joins the server: one signed JoinHost call, signed by the new host key itself. */
async function join(config: Config, hostId: string, stateDir: string, logger: Logger): Promise<AgentIdentity> {
  if (!config.serverAddress || !config.joinToken) {
    throw new TrustplaneError(
      "FAILED_PRECONDITION",
      "AGENT_NOT_JOINED",
      `agent ${hostId} has no identity in ${stateDir}; give --server and --join-token (mint one with \`trustplane host join-token --host-id ${hostId}\`)`,
    );
  }
  const signing = generateSigningKey("Ed25519");
  const sealing = generateKeyPairSync("x25519");
  const client = createClient(AuthServiceService, config.serverAddress, { key: signing, credentials: serverCredentialsFor(config) });
  try {
    const res = await client.joinHost({
      requestId: `join-${hostId}-${signing.keyId.slice(0, 16)}`,
      joinToken: config.joinToken,
      hostId,
      signingJwk: JSON.stringify(signing.publicJwk),
      sealingJwk: JSON.stringify(x25519Jwk(sealing.publicKey)),
      address: config.agentListen,
    });
    const identity: AgentIdentity = {
      hostId,
      serverAddress: config.serverAddress,
      caJwks: res.caJwks,
      hostCertificate: Buffer.from(SignedEnvelope.encode(res.hostCertificate!).finish()).toString("base64"),
      joinedAtMs: Date.now(),
    };
    writeSecretFile(path.join(stateDir, "host-signing.jwk.json"), JSON.stringify(exportPrivateJwk(signing), null, 2) + "\n");
    writeSecretFile(path.join(stateDir, "host-sealing.jwk.json"), JSON.stringify(x25519Jwk(sealing.privateKey), null, 2) + "\n");
    writeSecretFile(path.join(stateDir, "identity.json"), JSON.stringify(identity, null, 2) + "\n");
    logger.info({ hostId, keyId: signing.keyId }, "agent joined the server");
    return identity;
  } finally {
    client.close();
  }
}

export async function startAgent(config: Config, logger: Logger): Promise<AgentHandle> {
  const hostId = config.hostId ?? defaultHostId();
  const stateDir = path.join(config.dataDir, "agent", hostId);
  // Before any child logger exists, so a runtime level change reaches all of them.
  const logLevel = new LogLevelControl(logger);
  // CA keys arrive with the identity; until then no caller can be verified (UNKNOWN_KEY).
  const caKeys: VerificationKey[] = [];
  // Call nonces live in memory: a graceful stop hands them to the next start (snapshot); after
  // a crash the fence refuses any the previous run may have accepted.
  const callNonces = openVolatileNonceStore(stateDir, logger);
  // The agent knows no keys by id: every caller (the server, operators) presents a CA certificate.
  const verifier = new CallVerifier({
    keys: { resolve: async () => undefined },
    caKeys: () => caKeys,
    nonces: callNonces.store,
    // The server may call anything here. Any CA-certified caller may reach the privileged
    // executor, which then checks the signed request and both certificates itself.
    policy: new RulePolicyEngine(async (principal) =>
      principal === SERVER_PRINCIPAL
        ? { roles: ["admin"], rules: [{ methods: ["*"], effect: "allow" }] }
        : { roles: [], rules: [{ methods: ["/trustplane.privileged.v1.PrivilegedService/*"], effect: "allow" }] },
    ),
    skewMs: config.skewSeconds * 1000,
    hostId,
    // Operator certificates may restrict privileged operations; the executor enforces them.
    knownCertificateOptions: PRIVILEGED_CERTIFICATE_OPTIONS as Set<string>,
  });
  const host = new GrpcServerHost({ listen: config.agentListen, tls: config.tls, logger, drainSeconds: config.drainSeconds });
  const runtime: BindRuntime = { verifier, logger: logger.child({ hostId }) };
  const bound = new Set<grpc.ServiceDefinition>();
  const bind: Bind = (service, handlers) => {
    bindService(host.server, service, handlers, runtime);
    bound.add(service as grpc.ServiceDefinition);
    host.health.set(serviceName(service as grpc.ServiceDefinition), "SERVING");
  };
  // Bind first so the address registered at join is the one actually listening (port 0 in
  // tests); areas add their services once the identity they need exists.
  const address = await host.start();
  const running: Running[] = [];
  try {
    const identity = existsSync(path.join(stateDir, "identity.json"))
      ? readJsonSecretFile<AgentIdentity>(path.join(stateDir, "identity.json"))
      : await join({ ...config, agentListen: address }, hostId, stateDir, logger);
    const signingKey = importSigningKey(readJsonSecretFile<JsonWebKey>(path.join(stateDir, "host-signing.jwk.json")));
    const sealingJwk = importX25519Jwk(readJsonSecretFile<JsonWebKey>(path.join(stateDir, "host-sealing.jwk.json")));
    caKeys.push(...identity.caJwks.map((j) => importVerificationKey(j)));
    for (const area of AGENT_AREAS) {
      const r = await area.start({
        config,
        logger: logger.child({ area: area.name, hostId }),
        hostId,
        signingKey,
        hostCertificate: Buffer.from(identity.hostCertificate, "base64"),
        sealing: { publicKey: sealingJwk.publicKey, privateKey: sealingJwk.privateKey! },
        caKeys,
        serverAddress: identity.serverAddress,
        serverCredentials: serverCredentialsFor(config),
        stateDir,
        bind,
        setLogLevel: (level) => logLevel.set(level),
      });
      if (r) running.unshift(r);
    }
    for (const def of UNIMPLEMENTED_AGENT_SERVICES) if (!bound.has(def)) bindService(host.server, def, {}, runtime);
    logger.info({ address, hostId }, "trustplane agent listening");
    return {
      address,
      identity,
      signingKey,
      async shutdown() {
        for (const r of running) await r.drain?.().catch((e: Error) => logger.error({ err: e.message }, "area failed to drain"));
        await host.shutdown();
        // No call is verified any more: the next start takes over every nonce seen.
        callNonces.save();
        for (const r of running) await r.stop().catch((e: Error) => logger.error({ err: e.message }, "area failed to stop"));
        logger.info({ hostId }, "trustplane agent stopped");
      },
    };
  } catch (e) {
    for (const r of running) await r.stop().catch(() => undefined);
    await host.shutdown();
    callNonces.close();
    throw e;
  }
}

function serverCredentialsFor(config: Config): grpc.ChannelCredentials {
  return config.serverCaFile ? grpc.credentials.createSsl(readFileSync(config.serverCaFile)) : grpc.credentials.createInsecure();
}
