// Child process for the minting benchmark: one gRPC server on loopback with the real
// TokenService handlers over SQLite (signed host call → long-term token lookup by hash → VM
// holder check → EdDSA JWT), a signed Echo through the same binder, and an unsigned Echo.
// Keys resolve from storage as on the server (KeyCache), so host mint sessions work too.
import type { JsonWebKey } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { AuthServiceService, type EchoRequest, type EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { bindService } from "../../server/src/runtime/auth/service-binder.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { KeyCache } from "../../server/src/auth/key-cache.js";
import { AccessTokenMinter } from "../../server/src/token/authority/access-token-minter.js";
import { HostSessions } from "../../server/src/token/authority/host-sessions.js";
import { HostTokenSealer } from "../../server/src/token/authority/host-token-sealer.js";
import { LongTermTokens } from "../../server/src/token/authority/long-term-tokens.js";
import { ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";
import { TokenExchange } from "../../server/src/token/authority/token-exchange.js";
import { TokenRecordCache } from "../../server/src/token/authority/token-record-cache.js";
import { createTokenServiceHandlers } from "../../server/src/token/authority/token-service-handlers.js";
import { TokenUpdateHub } from "../../server/src/token/authority/token-update-hub.js";
import { UserCreateRequestCheck } from "../../server/src/token/authority/user-create-request.js";
import { SqlLongTermTokenStore } from "../../server/src/token/store/sql-long-term-token-store.js";
import { SqlServiceAccountStore } from "../../server/src/token/store/sql-service-account-store.js";
import { SqlSigningKeyStore, deriveAtRestKey } from "../../server/src/token/store/sql-signing-key-store.js";

export const BENCH_HOST = "bench-host";
export const BENCH_VM = "bench-vm";
export const UNSIGNED_ECHO_SERVICE = {
  echo: { ...AuthServiceService.echo, path: "/bench.UnsignedEcho/Echo", originalName: "Echo" },
} satisfies grpc.ServiceDefinition;

async function main(): Promise<void> {
  const hostJwk = JSON.parse(process.argv[2]!) as JsonWebKey;
  const sealingJwk = process.argv[3]!;
  const hostKey = importVerificationKey(hostJwk);
  const dir = mkdtempSync(path.join(os.tmpdir(), "tp-mint-bench-"));
  const storage = await Storage.open({ sqlitePath: path.join(dir, "bench.db") });
  const db = storage.db;
  // The host as JoinHost leaves it: its key registered for host:<id>, its sealing key on record.
  const principal = `host:${BENCH_HOST}`;
  await storage.principals.create({ name: principal, kind: "host", roles: ["host"], policy: { rules: [] }, createdAtMs: Date.now() });
  await storage.keys.add({ keyId: hostKey.keyId, principal, algorithm: "Ed25519", jwk: JSON.stringify(hostJwk), createdAtMs: Date.now() });
  await storage.hosts.upsert({ hostId: BENCH_HOST, signingKeyId: hostKey.keyId, signingJwk: JSON.stringify(hostJwk), sealingJwk, address: "", labels: {}, joinedAtMs: Date.now(), lastSeenMs: Date.now() });
  const keys = await SigningKeyRing.open({ store: new SqlSigningKeyStore(db, deriveAtRestKey(randomBytes(32))), maxTokenTtlSeconds: 3600 });
  // Wired as token-server-area.ts wires the authority, caches included.
  const accounts = new ServiceAccountRegistry(new SqlServiceAccountStore(db), { cacheTtlMs: 5_000 });
  const longTermStore = new SqlLongTermTokenStore(db);
  const hub = new TokenUpdateHub();
  const longTermTokens = new LongTermTokens({ store: longTermStore, accounts, hub, cache: new TokenRecordCache({ ttlMs: 5_000 }) });
  const minter = new AccessTokenMinter({ keys, issuer: "https://bench.trustplane" });
  const exchange = new TokenExchange({ longTermTokens, accounts, minter });
  await accounts.defineService({ name: "storage", audience: "https://storage.bench", scopes: ["storage.read"] });
  await accounts.createAccount({ email: "bench@p.trustplane", actors: ["bench-user"] });
  // Setup only: the bench measures minting, so the token is acquired directly.
  const lt = await longTermTokens.acquire({ principal: "bench-user", serviceAccount: "bench@p.trustplane", scopes: ["storage.read"], hostId: BENCH_HOST, vmId: BENCH_VM });

  const sealer = new HostTokenSealer(storage.hosts);
  const server = new grpc.Server();
  const logger = createLogger({ level: "silent" });
  const verifier = new CallVerifier({
    keys: new KeyCache(storage),
    caKeys: () => [],
    nonces: new MemoryNonceStore(),
    policy: { authorize: async () => true },
  });
  const handlers = createTokenServiceHandlers({
    storage,
    accounts,
    longTermTokens,
    longTermStore,
    exchange,
    keys,
    hub,
    sealer,
    userRequests: new UserCreateRequestCheck({ keys: storage.keys, accounts, ledger: longTermStore }),
    sessions: new HostSessions({ storage, sealer }),
    issuer: "https://bench.trustplane",
    jwksUrl: () => "",
  });
  bindService(server, TokenServiceService, handlers, { verifier, logger });
  bindService(server, AuthServiceService, { echo: async (req, ctx) => ({ message: req.message, principal: ctx.caller.principal, keyId: ctx.caller.keyId, requestId: ctx.requestId }) }, { verifier, logger });
  server.addService(UNSIGNED_ECHO_SERVICE, {
    echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoResponse>, cb: grpc.sendUnaryData<EchoResponse>) =>
      cb(null, { message: call.request.message, principal: "", keyId: "", requestId: "" }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  process.stdout.write(`PORT ${port} TOKEN ${lt.token}\n`);
  // "cpu" on stdin: this process's CPU time so far (µs), so the parent can price a call in
  // server CPU, which other load on the machine does not distort the way it does throughput.
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    for (const line of d.split("\n")) {
      if (line.trim() !== "cpu") continue;
      const u = process.cpuUsage();
      process.stdout.write(`CPU ${u.user + u.system}\n`);
    }
  });
  process.stdin.on("end", () => {
    server.forceShutdown();
    void storage.close().then(() => rmSync(dir, { recursive: true, force: true }));
  });
}

if (process.argv[1]?.endsWith("mint-bench-server.ts")) void main();
