// The token authority as a ServerArea: SQL-backed stores, the signing key ring (private keys
// sealed at rest under a CA-derived key), TokenService on the server's gRPC port, the JWKS on
// its own HTTP listener, and the LISTEN/NOTIFY bridge when several replicas share PostgreSQL.
import type { Config } from "../../runtime/config.js";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { exportPrivateJwk } from "../../../../sdk/src/auth/index.js";
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { TokenServiceService } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import { VmServiceService } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { ServerArea } from "../../processes/area.js";
import { PostgresDb } from "../../runtime/storage/postgres-db.js";
import { SqlLongTermTokenStore } from "../store/sql-long-term-token-store.js";
import { SqlServiceAccountStore } from "../store/sql-service-account-store.js";
import { SqlSigningKeyStore, deriveAtRestKey } from "../store/sql-signing-key-store.js";
import { AccessTokenMinter } from "./access-token-minter.js";
import { HostSessions } from "./host-sessions.js";
import { HostTokenSealer } from "./host-token-sealer.js";
import { createJwksHandler, JWKS_PATH } from "./jwks-http-handler.js";
import { LongTermTokens } from "./long-term-tokens.js";
import { PostgresTokenUpdateBridge } from "./postgres-token-update-bridge.js";
import { ServiceAccountRegistry } from "./service-accounts.js";
import { SigningKeyRing } from "./signing-keys.js";
import { TokenExchange } from "./token-exchange.js";
import { TokenRecordCache } from "./token-record-cache.js";
import { createTokenServiceHandlers } from "./token-service-handlers.js";
import { TokenUpdateHub } from "./token-update-hub.js";
import { UserCreateRequestCheck } from "./user-create-request.js";
import { vmInstanceFacts } from "./vm-instance-facts.js";


/** How long resource servers may cache the JWKS (Cache-Control max-age). */
const JWKS_MAX_AGE_SECONDS = 60;
/** Backstop lifetime of what the mint path caches (changes elsewhere are pushed sooner). */
const MINT_CACHE_TTL_MS = 5_000;
/** How often each replica re-reads the signing keys and runs rotation upkeep. */
const KEY_UPKEEP_MS = 10_000;

/** The token area's settings, from the shared Config (file → TRUSTPLANE_* environment → flags). */
export interface TokenAreaSettings {
  jwksListen: string;
  issuer: string;
  maxTtlSeconds: number;
  /** How long one signing key signs before a fresh one takes over. */
  keyRotationMs: number;
}

export function tokenAreaSettings(config: Config): TokenAreaSettings {
  return {
    jwksListen: config.jwksListen,
    issuer: config.tokenIssuer,
    maxTtlSeconds: config.tokenTtlSeconds,
    keyRotationMs: config.tokenKeyRotationHours * 3600_000,
  };
}

export const tokenServerArea: ServerArea = {
  name: "token",
  async start(ctx) {
    const settings = tokenAreaSettings(ctx.config);
    const db = ctx.storage.db;
    const caSecret = Buffer.from(String(exportPrivateJwk(ctx.ca).d), "base64url");
    const keys = await SigningKeyRing.open({ store: new SqlSigningKeyStore(db, deriveAtRestKey(caSecret)), maxTokenTtlSeconds: settings.maxTtlSeconds });
    // The mint path reuses the service catalogue and account lookups for a few seconds, and
    // token records until the hub says they changed (seed 000 minting at the authority).
    const accounts = new ServiceAccountRegistry(new SqlServiceAccountStore(db), { cacheTtlMs: MINT_CACHE_TTL_MS });
    const longTermStore = new SqlLongTermTokenStore(db);
    const sealer = new HostTokenSealer(ctx.storage.hosts);
    const hub = new TokenUpdateHub({ sealer });
    let bridge: PostgresTokenUpdateBridge | undefined;
    if (db instanceof PostgresDb) {
      bridge = await PostgresTokenUpdateBridge.open(db, { logger: ctx.logger });
      hub.attachBridge(bridge, sealer);
    }
    const longTermTokens = new LongTermTokens({ store: longTermStore, accounts, hub, cache: new TokenRecordCache({ ttlMs: MINT_CACHE_TTL_MS }) });
    const minter = new AccessTokenMinter({ keys, issuer: settings.issuer, maxTtlSeconds: settings.maxTtlSeconds });
    const exchange = new TokenExchange({
      longTermTokens,
      accounts,
      minter,
      instanceFacts: vmInstanceFacts(() => createClient(VmServiceService, ctx.address(), { key: ctx.serviceKey })),
    });

    const sessions = new HostSessions({ storage: ctx.storage, sealer });
    const jwks = createJwksHandler(keys, JWKS_MAX_AGE_SECONDS);
    const httpServer = http.createServer((req, res) => {
      if (!jwks(req, res)) res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    });
    const sep = settings.jwksListen.lastIndexOf(":");
    await new Promise<void>((resolve, reject) => {
      httpServer.once("error", reject);
      httpServer.listen(Number(settings.jwksListen.slice(sep + 1)), settings.jwksListen.slice(0, sep).replace(/^\[|\]$/g, ""), () => resolve());
    });
    const address = httpServer.address() as AddressInfo;
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    const jwksUrl = `http://${host}:${address.port}${JWKS_PATH}`;
    ctx.logger.info({ jwksUrl, issuer: settings.issuer, replica: hub.replicaId, bridge: Boolean(bridge) }, "token authority JWKS listening");

    ctx.bind(
      TokenServiceService,
      createTokenServiceHandlers({
        storage: ctx.storage,
        accounts,
        longTermTokens,
        longTermStore,
        exchange,
        keys,
        hub,
        sealer,
        userRequests: new UserCreateRequestCheck({ keys: ctx.storage.keys, accounts, ledger: longTermStore }),
        sessions,
        issuer: settings.issuer,
        jwksUrl: () => jwksUrl,
      }),
    );
    // Key upkeep: pick up keys other replicas made (their tokens must verify against this
    // replica's JWKS too), announce the next key ahead of its turn, drop retired ones. The
    // lead covers two upkeep rounds on the other replicas plus a JWKS cached for its max-age,
    // so no resource server meets a kid it cannot find.
    const announceLeadMs = 2 * KEY_UPKEEP_MS + JWKS_MAX_AGE_SECONDS * 1000 + 10_000;
    let upkeepRunning = false;
    const upkeep = setInterval(() => {
      if (upkeepRunning) return;
      upkeepRunning = true;
      void (async () => {
        await keys.refresh();
        const due = keys.currentActivatedAtMs() + settings.keyRotationMs - announceLeadMs;
        if (!keys.pending() && Date.now() >= due) {
          const kid = await keys.announce(announceLeadMs);
          await ctx.storage.audit.append({ principal: "trustplane-server", action: "token.signing_key.announce", target: kid, outcome: "ok", requestId: `key-announce-${kid}`, detail: { activatesInMs: announceLeadMs } });
          ctx.logger.info({ kid, activatesInMs: announceLeadMs }, "next token signing key announced");
        }
        await keys.prune();
        for (const keyId of await sessions.expire()) {
          await ctx.storage.audit.append({ principal: "trustplane-server", action: "token.host_session.expire", target: keyId, outcome: "ok", requestId: `session-expire-${keyId}` });
        }
      })()
        .catch((e: Error) => ctx.logger.warn({ err: e.message }, "token signing key upkeep failed"))
        .finally(() => (upkeepRunning = false));
    }, KEY_UPKEEP_MS);
    upkeep.unref();
    return {
      async stop() {
        clearInterval(upkeep);
        httpServer.closeAllConnections();
        await new Promise<void>((resolve) => httpServer.close(() => resolve()));
        await bridge?.close();
      },
    };
  },
};
