// Wiring for `trustplane server`: storage, keys, the call verifier and every service on one
// gRPC server. Only wiring lives here; behaviour lives in the areas and in runtime/.
import { PrincipalCache } from "../auth/principal-cache.js";
import { SealedIdempotencyStore, idempotencyKey } from "../runtime/auth/sealed-idempotency-store.js";
import { AuditCheckpointer, formatHead, readCheckpoint } from "../runtime/storage/audit-checkpoint.js";
import type { JsonWebKey } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import path from "node:path";
import { existsSync } from "node:fs";
import { exportPrivateJwk, generateSigningKey, importVerificationKey, type SigningKey } from "../../../sdk/src/auth/index.js";
import { AuthServiceService } from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HOST_POLICY, createAuthHandlers } from "../auth/auth-service.js";
import { PRIVILEGED_CERTIFICATE_OPTIONS } from "../../../sdk/src/privileged/certificate-options.js";
import { KeyCache } from "../auth/key-cache.js";
import { CallVerifier } from "../runtime/auth/call-verifier.js";
import type { NonceStore } from "../runtime/auth/nonce-store.js";
import { openVolatileNonceStore } from "../runtime/auth/nonce-snapshot-file.js";
import { RulePolicyEngine } from "../runtime/auth/policy-engine.js";
import { bindService, type BindRuntime } from "../runtime/auth/service-binder.js";
import type { Config } from "../runtime/config.js";
import { GrpcServerHost } from "../runtime/grpc-server.js";
import { readJsonSecretFile, writeSecretFile } from "../runtime/key-file.js";
import type { Logger } from "../runtime/logger.js";
import { Storage } from "../runtime/storage/storage.js";
import { SERVER_PRINCIPAL, loadServerKeys, type ServerKeys } from "./server-keys.js";
import { FsBlobStore } from "../runtime/storage/blob-store.js";
import type { Bind, Running } from "./area.js";
import { SERVER_AREAS } from "./areas.js";
import { UNIMPLEMENTED_SERVER_SERVICES, serviceName } from "./service-catalog.js";

export const ADMIN_PRINCIPAL = "admin";

/** What any verified caller may read: facts that are public by design (CA-signed host keys,
 * the CA and JWKS public keys) and who it is. Everything else comes from its own policy. */
export const AUTHENTICATED_BASELINE = {
  rules: [
    {
      methods: [
        "/trustplane.auth.v1.AuthService/Echo",
        "/trustplane.auth.v1.AuthService/WhoAmI",
        "/trustplane.auth.v1.AuthService/GetCaKeys",
        "/trustplane.privileged.v1.HostKeysService/GetHostKeys",
        "/trustplane.token.v1.TokenService/GetJwks",
      ],
      effect: "allow" as const,
    },
  ],
};

export interface ServerHandle {
  address: string;
  storage: Storage;
  keys: ServerKeys;
  /** Where the bootstrap admin key was written, when this start created it. */
  adminKeyFile?: string;
  shutdown(): Promise<void>;
}

/** Creates the admin principal on first start and writes its key (0600) when none is given. */
async function bootstrapAdmin(storage: Storage, keys: ServerKeys, dataDir: string, adminKeyFile: string | undefined): Promise<string | undefined> {
  const now = Date.now();
  await storage.db.transaction(async () => {
    if (!(await storage.principals.get(SERVER_PRINCIPAL))) {
      await storage.principals.create({ name: SERVER_PRINCIPAL, kind: "service", roles: ["admin"], policy: { rules: [{ methods: ["*"], effect: "allow" }] }, createdAtMs: now });
    }
    if (!(await storage.keys.get(keys.service.keyId))) {
      await storage.keys.add({ keyId: keys.service.keyId, principal: SERVER_PRINCIPAL, algorithm: keys.service.algorithm, jwk: JSON.stringify(keys.service.publicJwk), createdAtMs: now });
    }
  });
  if (await storage.principals.get(ADMIN_PRINCIPAL)) return undefined;
  const file = adminKeyFile ?? path.join(dataDir, "admin.jwk.json");
  let admin: SigningKey | undefined;
  if (!existsSync(file)) {
    admin = generateSigningKey("Ed25519");
    writeSecretFile(file, JSON.stringify(exportPrivateJwk(admin), null, 2) + "\n");
  }
  const jwk = readJsonSecretFile<JsonWebKey>(file);
  const { d: _private, ...publicJwk } = jwk as JsonWebKey & { d?: string };
  const verification = importVerificationKey(jwk.kty === "oct" ? jwk : publicJwk);
  await storage.db.transaction(async () => {
    await storage.principals.create({ name: ADMIN_PRINCIPAL, kind: "user", roles: ["admin"], policy: { rules: [{ methods: ["*"], effect: "allow" }] }, createdAtMs: now });
    await storage.keys.add({ keyId: verification.keyId, principal: ADMIN_PRINCIPAL, algorithm: verification.algorithm, jwk: JSON.stringify(verification.jwk), createdAtMs: now });
    await storage.audit.append({ principal: SERVER_PRINCIPAL, action: "principal.bootstrap_admin", target: ADMIN_PRINCIPAL, outcome: "ok", requestId: "bootstrap", detail: { keyId: verification.keyId } });
  });
  return file;
}

/** Beside the database: the newest audit head the server saw (see audit-checkpoint.ts). */
export const AUDIT_CHECKPOINT_FILE = "audit.head.json";

export async function startServer(config: Config, logger: Logger, options: { adminKeyFile?: string } = {}): Promise<ServerHandle> {
  const storage = await Storage.open(config.databaseUrl ? { url: config.databaseUrl, logger } : { sqlitePath: path.join(config.dataDir, "trustplane.db"), logger });
  const running: Running[] = [];
  try {
    // The head this server saw last must still be in the log: a shortened chain is still a chain.
    const checkpointFile = path.join(config.dataDir, AUDIT_CHECKPOINT_FILE);
    const remembered = readCheckpoint(checkpointFile);
    const lost = remembered && (await storage.audit.missing(remembered));
    if (lost) logger.error({ checkpoint: formatHead(remembered), problem: lost }, "AUDIT LOG INTEGRITY: the log no longer reaches the head this server recorded; investigate before trusting it");
    const checkpointer = new AuditCheckpointer(storage.audit, checkpointFile, (problem, kept) =>
      logger.error({ checkpoint: formatHead(kept), problem }, "AUDIT LOG INTEGRITY: the log was rewritten under the server; the checkpoint is kept as it was"),
    );
    storage.audit.onAppended(() => checkpointer.touch());
    running.push({ stop: () => checkpointer.flush() });
    const keys = loadServerKeys(config.dataDir);
    const adminKeyFile = await bootstrapAdmin(storage, keys, config.dataDir, options.adminKeyFile);
    const keyCache = new KeyCache(storage);
    // One replica: replay cache in memory, handed over at a graceful stop and fenced after a
    // crash. Several replicas share PostgreSQL's nonce table.
    const memoryNonces = config.databaseUrl ? undefined : openVolatileNonceStore(config.dataDir, logger);
    if (memoryNonces) running.push({ stop: async () => memoryNonces.close() });
    const nonces: NonceStore = memoryNonces?.store ?? storage.nonces;
    const principals = new PrincipalCache(storage);
    const policy = new RulePolicyEngine(async (principal) => {
      const rec = await principals.get(principal);
      // Hosts always get the current host policy, not the copy stored when they joined.
      return rec ? { roles: rec.roles, rules: [...AUTHENTICATED_BASELINE.rules, ...(rec.kind === "host" ? HOST_POLICY.rules : rec.policy.rules)] } : undefined;
    });
    const caVerification = importVerificationKey(keys.ca.publicJwk);
    // Privileged certificate options restrict operations on hosts' agents; no server method is
    // one, so the server understands them as restricting nothing here.
    const verifier = new CallVerifier({ keys: keyCache, caKeys: () => [caVerification], nonces, policy, skewMs: config.skewSeconds * 1000, knownCertificateOptions: PRIVILEGED_CERTIFICATE_OPTIONS as Set<string> });
    const host = new GrpcServerHost({ listen: config.listen, tls: config.tls, logger, drainSeconds: config.drainSeconds });
    const runtime: BindRuntime = {
      verifier,
      logger,
      publicMethods: new Set([AuthServiceService.joinHost.path]),
      // Stored responses may carry secrets (tokens issued to an admin): sealed at rest.
      idempotency: new SealedIdempotencyStore(storage.idempotency, idempotencyKey(Buffer.from(String(exportPrivateJwk(keys.ca).d), "base64url"))),
      onDenied: async (e) => {
        await storage.audit
          .append({ principal: e.principal ?? "(unauthenticated)", action: `call.denied`, target: e.method, outcome: e.reason, requestId: e.requestId, detail: e.keyId ? { keyId: e.keyId } : {} })
          .catch((err: Error) => logger.error({ err: err.message }, "failed to audit a denied call"));
      },
    };
    const bound = new Set<grpc.ServiceDefinition>();
    const bind: Bind = (service, handlers) => {
      bindService(host.server, service, handlers, runtime);
      bound.add(service as grpc.ServiceDefinition);
      host.health.set(serviceName(service as grpc.ServiceDefinition), "SERVING");
    };
    bind(AuthServiceService, createAuthHandlers({ storage, ca: keys.ca, keyCache, principalCache: principals, nonces, skewMs: config.skewSeconds * 1000 }));
    let address = "";
    const blobs = new FsBlobStore(path.join(config.dataDir, "blobs"));
    // Temp files of uploads a previous run did not finish (crash, kill -9).
    const swept = await blobs.removeStaleTemp();
    if (swept) logger.info({ swept }, "removed unfinished blob uploads");
    // Expired join tokens and idempotency records older than a week go away every hour.
    const purge = setInterval(() => {
      const now = Date.now();
      void Promise.all([storage.joinTokens.purgeExpired(now), storage.idempotency.purgeCreatedBefore(now - 7 * 24 * 3600_000)]).catch((e: Error) =>
        logger.warn({ err: e.message }, "periodic purge failed"),
      );
    }, 3600_000);
    purge.unref();
    running.push({ stop: async () => clearInterval(purge) });
    for (const area of SERVER_AREAS) {
      const r = await area.start({
        config,
        logger: logger.child({ area: area.name }),
        storage,
        blobs,
        ca: keys.ca,
        serviceKey: keys.service,
        serviceCertificate: keys.serviceCertificate,
        bind,
        address: () => address,
      });
      if (r) running.unshift(r);
    }
    for (const def of UNIMPLEMENTED_SERVER_SERVICES) if (!bound.has(def)) bindService(host.server, def, {}, runtime);
    address = await host.start();
    logger.info({ address, database: config.databaseUrl ? "postgres" : "sqlite", dataDir: config.dataDir, tls: Boolean(config.tls) }, "trustplane server listening");
    return {
      address,
      storage,
      keys,
      adminKeyFile,
      async shutdown() {
        await host.shutdown();
        // No call is verified any more: the next start takes over every nonce seen.
        memoryNonces?.save();
        for (const r of running) await r.stop().catch((e: Error) => logger.error({ err: e.message }, "area failed to stop"));
        await storage.close();
        logger.info("trustplane server stopped");
      },
    };
  } catch (e) {
    for (const r of running) await r.stop().catch(() => undefined);
    await storage.close();
    throw e;
  }
}
