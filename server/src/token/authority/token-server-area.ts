// The token authority as a ServerArea: SQL-backed stores, the signing key ring (private keys
// sealed at rest under a CA-derived key), TokenService on the server's gRPC port, the JWKS on
// its own HTTP listener, and the LISTEN/NOTIFY bridge when several replicas share PostgreSQL.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { exportPrivateJwk } from "../../../../sdk/src/auth/index.js";
import { TokenServiceService } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { ServerArea } from "../../processes/area.js";
import { PostgresDb } from "../../runtime/storage/postgres-db.js";
import { SqlLongTermTokenStore } from "../store/sql-long-term-token-store.js";
import { SqlServiceAccountStore } from "../store/sql-service-account-store.js";
import { SqlSigningKeyStore, deriveAtRestKey } from "../store/sql-signing-key-store.js";
import { AccessTokenMinter } from "./access-token-minter.js";
import { HostTokenSealer } from "./host-token-sealer.js";
import { createJwksHandler, JWKS_PATH } from "./jwks-http-handler.js";
import { LongTermTokens } from "./long-term-tokens.js";
import { PostgresTokenUpdateBridge } from "./postgres-token-update-bridge.js";
import { ServiceAccountRegistry } from "./service-accounts.js";
import { SigningKeyRing } from "./signing-keys.js";
import { TokenExchange } from "./token-exchange.js";
import { createTokenServiceHandlers } from "./token-service-handlers.js";
import { TokenUpdateHub } from "./token-update-hub.js";
import { UserCreateRequestCheck } from "./user-create-request.js";

/** Default `iss`; the same on every replica (TRUSTPLANE_TOKEN_ISSUER overrides). */
export const DEFAULT_TOKEN_ISSUER = "https://tokens.trustplane.local";

/**
 * Settings read from the environment until the shared Config grows them:
 * TRUSTPLANE_JWKS_LISTEN (host:port, loopback port 0 by default), TRUSTPLANE_TOKEN_ISSUER,
 * TRUSTPLANE_TOKEN_TTL_SECONDS (short-term token lifetime, ≤ 3600), TRUSTPLANE_TOKEN_KEY_ROTATION_HOURS.
 */
export interface TokenAreaSettings {
  jwksListen: string;
  issuer: string;
  maxTtlSeconds: number;
  /** How long one signing key signs before a fresh one takes over (TRUSTPLANE_TOKEN_KEY_ROTATION_HOURS, default 24). */
  keyRotationMs: number;
}

export function tokenAreaSettings(env: NodeJS.ProcessEnv = process.env): TokenAreaSettings {
  return {
    jwksListen: env.TRUSTPLANE_JWKS_LISTEN ?? "127.0.0.1:0",
    issuer: env.TRUSTPLANE_TOKEN_ISSUER ?? DEFAULT_TOKEN_ISSUER,
    maxTtlSeconds: env.TRUSTPLANE_TOKEN_TTL_SECONDS ? Number(env.TRUSTPLANE_TOKEN_TTL_SECONDS) : 3600,
    keyRotationMs: (env.TRUSTPLANE_TOKEN_KEY_ROTATION_HOURS ? Number(env.TRUSTPLANE_TOKEN_KEY_ROTATION_HOURS) : 24) * 3600_000,
  };
}

export const tokenServerArea: ServerArea = {
  name: "token",
  async start(ctx) {
    const settings = tokenAreaSettings();
    const db = ctx.storage.db;
    const caSecret = Buffer.from(String(exportPrivateJwk(ctx.ca).d), "base64url");
    const keys = await SigningKeyRing.open({ store: new SqlSigningKeyStore(db, deriveAtRestKey(caSecret)), maxTokenTtlSeconds: settings.maxTtlSeconds });
    const accounts = new ServiceAccountRegistry(new SqlServiceAccountStore(db));
    const longTermStore = new SqlLongTermTokenStore(db);
    const sealer = new HostTokenSealer(ctx.storage.hosts);
    const hub = new TokenUpdateHub({ sealer });
    let bridge: PostgresTokenUpdateBridge | undefined;
    if (db instanceof PostgresDb) {
      bridge = await PostgresTokenUpdateBridge.open(db, ctx.logger);
      hub.attachBridge(bridge, sealer);
    }
    const longTermTokens = new LongTermTokens({ store: longTermStore, accounts, hub });
    const minter = new AccessTokenMinter({ keys, issuer: settings.issuer, maxTtlSeconds: settings.maxTtlSeconds });
    const exchange = new TokenExchange({ longTermTokens, accounts, minter });

    const jwks = createJwksHandler(keys, 60);
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
        issuer: settings.issuer,
        jwksUrl: () => jwksUrl,
      }),
    );
    // Key upkeep: pick up keys other replicas made (their tokens must verify against this
    // replica's JWKS too), rotate a key that has signed long enough, drop retired ones.
    let upkeepRunning = false;
    const upkeep = setInterval(() => {
      if (upkeepRunning) return;
      upkeepRunning = true;
      void (async () => {
        await keys.refresh();
        if (Date.now() - keys.currentCreatedAtMs() >= settings.keyRotationMs) {
          const kid = await keys.rotate();
          await ctx.storage.audit.append({ principal: "trustplane-server", action: "token.signing_key.rotate", target: kid, outcome: "ok", requestId: `key-rotation-${kid}` });
          ctx.logger.info({ kid }, "token signing key rotated");
        }
        await keys.prune();
      })()
        .catch((e: Error) => ctx.logger.warn({ err: e.message }, "token signing key upkeep failed"))
        .finally(() => (upkeepRunning = false));
    }, 10_000);
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
