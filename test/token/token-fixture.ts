// Test fixture for the token area: a real authority (key ring, minter, service accounts,
// long-term tokens, update hub, exchange), its JWKS over node:http on loopback, and a
// TokenUpstream backed by that authority with a switch to simulate it being unreachable.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { AccessTokenMinter } from "../../server/src/token/authority/access-token-minter.js";
import { createJwksHandler, JWKS_PATH } from "../../server/src/token/authority/jwks-http-handler.js";
import { InMemoryLongTermTokenStore, LongTermTokens } from "../../server/src/token/authority/long-term-tokens.js";
import { InMemoryServiceAccountStore, ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { InMemorySigningKeyStore, SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";
import { TokenExchange } from "../../server/src/token/authority/token-exchange.js";
import { TokenUpdateHub } from "../../server/src/token/authority/token-update-hub.js";
import type { TokenUpstream } from "../../server/src/token/agent/token-cache.js";

export const ISSUER = "https://tokens.trustplane.test";
export const STORAGE_AUD = "https://storage.trustplane.test";
export const QUEUE_AUD = "https://queue.trustplane.test";
export const ALICE = "user:alice";

export interface Clock {
  now: () => number;
  advance: (ms: number) => void;
}

export function manualClock(start = Date.now()): Clock {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

export async function createAuthority(options: { now?: () => number; maxTtlSeconds?: number; ttlMs?: number; graceMs?: number } = {}) {
  const now = options.now ?? Date.now;
  const accounts = new ServiceAccountRegistry(new InMemoryServiceAccountStore());
  await accounts.defineService({ name: "storage", audience: STORAGE_AUD, scopes: ["storage.read", "storage.write"] });
  await accounts.defineService({ name: "queue", audience: QUEUE_AUD, scopes: ["queue.publish"] });
  await accounts.createAccount({ email: "builder@acme.trustplane", actors: [ALICE] });
  await accounts.createAccount({ email: "reader@acme.trustplane", actors: [ALICE] });
  const keyStore = new InMemorySigningKeyStore();
  const keys = await SigningKeyRing.open({ store: keyStore, maxTokenTtlSeconds: 3600, now });
  const minter = new AccessTokenMinter({ keys, issuer: ISSUER, maxTtlSeconds: options.maxTtlSeconds, now });
  const hub = new TokenUpdateHub();
  const ltStore = new InMemoryLongTermTokenStore();
  const longTermTokens = new LongTermTokens({ store: ltStore, accounts, hub, now, ttlMs: options.ttlMs, rotationGraceMs: options.graceMs });
  const exchange = new TokenExchange({
    longTermTokens,
    accounts,
    minter,
    instanceFacts: async (vmId) => ({ instanceId: vmId, instanceName: `vm-${vmId}`, projectId: "acme", projectNumber: "4242", zone: "local-a" }),
  });
  return { accounts, keys, keyStore, minter, hub, ltStore, longTermTokens, exchange };
}

export type Authority = Awaited<ReturnType<typeof createAuthority>>;

/** Serves the authority's JWKS on 127.0.0.1; `url` is the jwks.json URL. */
export async function startJwksServer(keys: SigningKeyRing): Promise<{ url: URL; close: () => Promise<void>; server: Server }> {
  const handle = createJwksHandler(keys, 0);
  const server = createServer((req, res) => {
    if (!handle(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: new URL(`http://127.0.0.1:${port}${JWKS_PATH}`),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A TokenUpstream calling the real exchange in-process; `down` simulates an unreachable authority. */
export function authorityUpstream(exchange: TokenExchange) {
  const state = { down: false, accessMints: 0, identityMints: 0, delayMs: 0 };
  const gate = async () => {
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    if (state.down) throw new TrustplaneError("UNAVAILABLE", "AUTHORITY_UNREACHABLE", "connect ECONNREFUSED (simulated)");
  };
  const upstream: TokenUpstream = {
    async mintAccessToken(req) {
      state.accessMints++;
      await gate();
      const t = await exchange.accessToken(req);
      return { token: t.jwt, expiresAtMs: t.expiresAtMs };
    },
    async mintIdentityToken(req) {
      state.identityMints++;
      await gate();
      const t = await exchange.identityToken(req);
      return { token: t.jwt, expiresAtMs: t.expiresAtMs };
    },
  };
  return { upstream, state };
}

export interface VmSetup {
  vmId?: string;
  hostId?: string;
  accounts: { serviceAccount: string; scopes: string[] }[];
  rateLimit?: { ratePerSecond: number; burst: number };
  maxWaitSeconds?: number;
  maxWaiters?: number;
  logger?: import("../../server/src/runtime/logger.js").Logger;
  renew?: boolean;
  now?: () => number;
  random?: () => number;
}

/** Acquires long-term tokens from the real authority and starts a VM authorization process on loopback. */
export async function startVm(auth: Authority, setup: VmSetup) {
  const vmId = setup.vmId ?? "vm-1";
  const hostId = setup.hostId ?? "host-a";
  const { VmAuthorizationProcess } = await import("../../server/src/token/agent/vm-authorization-process.js");
  const { upstream, state } = authorityUpstream(auth.exchange);
  const vm = new VmAuthorizationProcess({
    identity: { vmId, hostId, hostname: `${vmId}.local`, instanceName: vmId, zone: "local-a", projectId: "acme", numericProjectId: "4242" },
    upstream,
    renewer: setup.renew
      ? { renew: async ({ longTermToken, hostId: h }) => auth.longTermTokens.renew(longTermToken, h) }
      : undefined,
    logger: setup.logger,
    server: { rateLimit: setup.rateLimit ?? { ratePerSecond: 10_000, burst: 10_000 }, maxWaitSeconds: setup.maxWaitSeconds, maxWaiters: setup.maxWaiters },
    now: setup.now,
    random: setup.random,
  });
  const unsubscribe = auth.hub.subscribe(hostId, (u) => void vm.applyUpdate(u));
  const grants = [];
  for (const a of setup.accounts) grants.push(await grant(auth, vm, { ...a, vmId, hostId }));
  const address = await vm.start("127.0.0.1", 0);
  return {
    vm,
    upstream,
    state,
    /** What the authority issued (accessors, versions); the secrets stay with the process. */
    grants: grants.map(({ token: _secret, ...rest }) => rest),
    port: address.port,
    base: `http://127.0.0.1:${address.port}`,
    stop: async () => {
      unsubscribe();
      await vm.stop();
    },
  };
}

/** Gives a running VM an account: acquire at the authority, hand the grant to the process. */
export async function grant(
  auth: Authority,
  vm: import("../../server/src/token/agent/vm-authorization-process.js").VmAuthorizationProcess,
  a: { serviceAccount: string; scopes: string[]; vmId: string; hostId: string },
) {
  const issued = await auth.longTermTokens.acquire({ principal: ALICE, ...a });
  if (!issued.token) throw new Error("fixture expected a fresh secret");
  vm.addAccount({ ...issued, token: issued.token });
  return issued;
}

export interface RawResponse {
  status: number;
  headers: import("node:http").IncomingHttpHeaders;
  body: string;
}

/** A raw HTTP GET with exactly the headers given (no client adds or drops any). */
export async function rawGet(port: number, path: string, headers: Record<string, string> = { "Metadata-Flavor": "Google" }): Promise<RawResponse> {
  const { request } = await import("node:http");
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "GET", headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}
