// TokenService over gRPC (seed 000's token authority): service accounts and their ACL,
// long-term tokens issued only against the user's own signed create request, short-term
// token minting for the host that holds the long-term token, JWKS, and the per-host push
// stream of rotations and revocations (secrets HPKE-sealed to the host). Audits mutations.
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import {
  TokenUpdateKind,
  type LongTermTokenInfo,
  type ServiceAccount as ServiceAccountMessage,
  type TokenServiceService,
  type WatchTokenUpdatesRequest,
  type WatchTokenUpdatesResponse,
} from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { CallContext, Handlers } from "../../runtime/auth/service-binder.js";
import type { Storage } from "../../runtime/storage/storage.js";
import { SERVER_PRINCIPAL } from "../../processes/server-keys.js";
import type { LongTermTokenRecord, LongTermTokens } from "./long-term-tokens.js";
import { canonicalScopes, type ServiceAccount, type ServiceAccountRegistry } from "./service-accounts.js";
import type { SigningKeyRing } from "./signing-keys.js";
import type { TokenExchange } from "./token-exchange.js";
import type { DeliveredUpdate, TokenSealer, TokenUpdateHub } from "./token-update-hub.js";
import type { HostSessions } from "./host-sessions.js";
import type { UserCreateRequestCheck } from "./user-create-request.js";
import type { SqlLongTermTokenStore } from "../store/sql-long-term-token-store.js";

export interface TokenServiceDeps {
  storage: Storage;
  accounts: ServiceAccountRegistry;
  longTermTokens: LongTermTokens;
  longTermStore: SqlLongTermTokenStore;
  exchange: TokenExchange;
  keys: SigningKeyRing;
  hub: TokenUpdateHub;
  sealer: TokenSealer;
  userRequests: UserCreateRequestCheck;
  sessions: HostSessions;
  issuer: string;
  jwksUrl: () => string;
}

type TokenHandlers = Handlers<typeof TokenServiceService>;

const ADMIN_ROLE = "admin";
/** Mints per MintAccessTokens call: bounds the work one signed call can ask for. */
export const MAX_MINT_BATCH = 64;

/**
 * Host-bound calls: the caller must be the agent of `hostId` (principal host:<id>), or an
 * admin. A host can neither mint with nor watch another host's tokens.
 */
export function requireHostCaller(ctx: Pick<CallContext, "caller">, hostId: string): void {
  if (!hostId) throw invalidArgument("host_id", "must name the host the long-term token is bound to");
  if (ctx.caller.principal === `host:${hostId}`) return;
  if (ctx.caller.roles.includes(ADMIN_ROLE)) return;
  throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `principal ${ctx.caller.principal} may not act for host ${hostId}`, "host_id");
}

function accountMessage(a: ServiceAccount): ServiceAccountMessage {
  return { email: a.email, displayName: a.displayName, actAs: a.actors, allowedScopes: a.allowedScopes, createdAtMs: a.createdAtMs };
}

function infoMessage(r: Omit<LongTermTokenRecord, "tokenHash" | "previousTokenHash">): LongTermTokenInfo {
  return {
    accessor: r.accessor,
    serviceAccount: r.serviceAccount,
    scopes: r.scopes,
    hostIds: r.hostIds,
    vmIds: [...new Set(r.holders.map((h) => h.vmId))],
    version: r.version,
    expiresAtMs: r.expiresAtMs,
    revoked: r.revokedAtMs !== undefined,
    holders: r.holders.map((h) => ({ vmId: h.vmId, hostId: h.hostId })),
    issuedAtMs: r.issuedAtMs,
    createdAtMs: r.createdAtMs,
    revokedAtMs: r.revokedAtMs ?? 0,
    revokeReason: r.revokeReason ?? "",
  };
}

function page<T>(items: T[], key: (t: T) => string, size: number, token: string): { items: T[]; next: string } {
  if (size < 0) throw invalidArgument("page_size", "must not be negative");
  const n = Math.min(size || 100, 1000);
  const rest = token ? items.filter((i) => key(i) > token) : items;
  const slice = rest.slice(0, n);
  return { items: slice, next: rest.length > n ? key(slice[slice.length - 1]!) : "" };
}

function auditFor(d: TokenServiceDeps, ctx: CallContext, action: string, target: string, detail: Record<string, unknown> = {}) {
  return d.storage.audit.append({ principal: ctx.caller.principal, action, target, outcome: "ok", requestId: ctx.requestId, detail });
}

export function createTokenServiceHandlers(d: TokenServiceDeps): Partial<TokenHandlers> {
  const audit = (ctx: CallContext, action: string, target: string, detail: Record<string, unknown> = {}) => auditFor(d, ctx, action, target, detail);

  return {
    async createServiceAccount(req, ctx) {
      const account = await d.accounts.createAccount({ email: req.email, displayName: req.displayName || undefined, allowedScopes: req.allowedScopes });
      await audit(ctx, "token.service_account.create", account.email, { allowedScopes: account.allowedScopes });
      return { account: accountMessage(account) };
    },

    async getServiceAccount(req) {
      return { account: accountMessage(await d.accounts.get(req.email)) };
    },

    async listServiceAccounts(req) {
      const p = page(await d.accounts.list(), (a) => a.email, req.pageSize, req.pageToken);
      return { accounts: p.items.map(accountMessage), nextPageToken: p.next };
    },

    async deleteServiceAccount(req, ctx) {
      await d.accounts.delete(req.email);
      // Deleted first, so nothing mints for the account while its tokens are being revoked.
      const revoked = await d.longTermTokens.revokeAccount(req.email);
      await audit(ctx, "token.service_account.delete", req.email, { revoked });
      return {};
    },

    async grantActAs(req, ctx) {
      const account = await d.accounts.grant(req.email, req.principal);
      await audit(ctx, "token.service_account.grant", req.email, { principal: req.principal });
      return { account: accountMessage(account) };
    },

    async revokeActAs(req, ctx) {
      const account = await d.accounts.revokeGrant(req.email, req.principal);
      await audit(ctx, "token.service_account.revoke_grant", req.email, { principal: req.principal });
      return { account: accountMessage(account) };
    },

    async defineService(req, ctx) {
      if (!req.service) throw invalidArgument("service", "a service definition is required");
      const def = await d.accounts.defineService({ name: req.service.service, audience: req.service.audience, scopes: req.service.scopes });
      await audit(ctx, "token.service.define", def.name, { audience: def.audience, scopes: def.scopes });
      return { service: { service: def.name, audience: def.audience, scopes: def.scopes } };
    },

    async listServices(req) {
      const all = (await d.storage.db.all<{ name: string; audience: string; scopes_json: string }>("SELECT * FROM token_services ORDER BY name")).map((r) => ({
        service: r.name,
        audience: r.audience,
        scopes: JSON.parse(r.scopes_json) as string[],
      }));
      const p = page(all, (s) => s.service, req.pageSize, req.pageToken);
      return { services: p.items, nextPageToken: p.next };
    },

    async issueLongTermToken(req, ctx) {
      if (!req.hostId) throw invalidArgument("host_id", "must name the host the VM runs on");
      if (!req.vmId) throw invalidArgument("vm_id", "must name the VM that will hold the token");
      if (!(await d.storage.hosts.get(req.hostId))) throw new TrustplaneError("NOT_FOUND", "HOST_UNKNOWN", `host ${req.hostId} has not joined`, "host_id");
      const scopes = canonicalScopes(req.scopes);
      // Check everything that does not consume the user's request first, so a typo does not
      // burn it; then the request is marked used before anything is issued.
      await d.accounts.audiencesForScopes(scopes);
      const account = await d.accounts.get(req.serviceAccount).catch(() => undefined);
      if (account) d.accounts.requireAllowedScopes(account, scopes);
      const user = await d.userRequests.check(req.userRequest, { serviceAccount: req.serviceAccount, scopes, vmId: req.vmId }, req.userRequestBody);
      const issued = await d.longTermTokens.acquire({
        principal: user.principal,
        serviceAccount: req.serviceAccount,
        scopes,
        hostId: req.hostId,
        vmId: req.vmId,
        hostHasVersion: req.heldVersion || undefined,
      });
      const info = await d.longTermTokens.describe(issued.accessor);
      await audit(ctx, "token.long_term.issue", issued.accessor, {
        serviceAccount: req.serviceAccount,
        scopes,
        hostId: req.hostId,
        vmId: req.vmId,
        user: user.principal,
        userKeyId: user.keyId,
        version: issued.version,
      });
      if (req.sealToHost && issued.token) {
        return { token: "", info: infoMessage(info), sealedToken: Buffer.from(await d.sealer.seal(req.hostId, issued.token), "base64url") };
      }
      return { token: issued.token ?? "", info: infoMessage(info), sealedToken: new Uint8Array(0) };
    },

    async rotateLongTermToken(req, ctx) {
      const issued = await d.longTermTokens.rotate(req.accessor);
      await audit(ctx, "token.long_term.rotate", req.accessor, { version: issued.version });
      return { info: infoMessage(await d.longTermTokens.describe(req.accessor)) };
    },

    async revokeLongTermToken(req, ctx) {
      const reason = req.reason || "REVOKED_BY_OPERATOR";
      if (!/^[A-Z][A-Z0-9_]{0,63}$/.test(reason)) throw invalidArgument("reason", "must be an UPPER_SNAKE reason code");
      await d.longTermTokens.revoke(req.accessor, reason);
      await audit(ctx, "token.long_term.revoke", req.accessor, { reason });
      return { info: infoMessage(await d.longTermTokens.describe(req.accessor)) };
    },

    async renewLongTermToken(req, ctx) {
      requireHostCaller(ctx, req.hostId);
      const renewed = await d.longTermTokens.renew(req.token, req.hostId);
      await audit(ctx, "token.long_term.renew", renewed.accessor, { version: renewed.version, hostId: req.hostId });
      if (req.sealToHost && renewed.token) {
        return { expiresAtMs: renewed.expiresAtMs, version: renewed.version, token: "", sealedToken: Buffer.from(await d.sealer.seal(req.hostId, renewed.token), "base64url") };
      }
      return { expiresAtMs: renewed.expiresAtMs, version: renewed.version, token: renewed.token ?? "", sealedToken: new Uint8Array(0) };
    },

    async redeliverLongTermToken(req, ctx) {
      // The VM manager (or an operator) only: a host cannot ask for secrets on its own say-so.
      if (ctx.caller.principal !== SERVER_PRINCIPAL && !ctx.caller.roles.includes(ADMIN_ROLE)) {
        throw new TrustplaneError("PERMISSION_DENIED", "NOT_VM_MANAGER", `principal ${ctx.caller.principal} may not re-deliver long-term tokens`);
      }
      if (!req.hostId) throw invalidArgument("host_id", "must name the host the VM runs on");
      if (!req.vmId) throw invalidArgument("vm_id", "must name the VM that holds the token");
      if (!(await d.storage.hosts.get(req.hostId))) throw new TrustplaneError("NOT_FOUND", "HOST_UNKNOWN", `host ${req.hostId} has not joined`, "host_id");
      const issued = await d.longTermTokens.redeliver({ accessor: req.accessor, hostId: req.hostId, vmId: req.vmId });
      await audit(ctx, "token.long_term.redeliver", issued.accessor, {
        serviceAccount: issued.serviceAccount,
        scopes: issued.scopes,
        hostId: req.hostId,
        vmId: req.vmId,
        user: issued.principal,
        version: issued.version,
      });
      return { info: infoMessage(await d.longTermTokens.describe(issued.accessor)), sealedToken: Buffer.from(await d.sealer.seal(req.hostId, issued.token!), "base64url") };
    },

    async releaseLongTermToken(req, ctx) {
      const { revoked } = await d.longTermTokens.release({ accessor: req.accessor, vmId: req.vmId });
      await audit(ctx, "token.long_term.release", req.accessor, { vmId: req.vmId, revoked });
      return { info: infoMessage(await d.longTermTokens.describe(req.accessor)), revoked };
    },

    async getLongTermToken(req) {
      return { info: infoMessage(await d.longTermTokens.describe(req.accessor)) };
    },

    async listLongTermTokens(req) {
      // One query: by host (what the VM manager asks on every terminate) or by account, else all.
      const records = req.hostId
        ? await d.longTermStore.listByHost(req.hostId)
        : req.serviceAccount && !req.includeRevoked
          ? await d.longTermStore.listActiveByAccount(req.serviceAccount)
          : await d.longTermStore.listAll();
      records.sort((a, b) => (a.accessor < b.accessor ? -1 : a.accessor > b.accessor ? 1 : 0));
      const infos: LongTermTokenInfo[] = [];
      for (const r of records) {
        const info = infoMessage(r);
        if (!req.includeRevoked && info.revoked) continue;
        if (req.serviceAccount && info.serviceAccount !== req.serviceAccount) continue;
        if (req.hostId && !info.hostIds.includes(req.hostId)) continue;
        infos.push(info);
      }
      const p = page(infos, (i) => i.accessor, req.pageSize, req.pageToken);
      return { tokens: p.items, nextPageToken: p.next };
    },

    async mintAccessToken(req, ctx) {
      requireHostCaller(ctx, req.hostId);
      const minted = await d.exchange.accessToken({ longTermToken: req.longTermToken, hostId: req.hostId, vmId: req.vmId, scopes: req.scopes });
      return { accessToken: minted.jwt, expiresInSeconds: minted.expiresIn, tokenType: "Bearer" };
    },

    async mintAccessTokens(req, ctx) {
      if (req.requests.length === 0) throw invalidArgument("requests", "send at least one mint request");
      if (req.requests.length > MAX_MINT_BATCH) throw invalidArgument("requests", `at most ${MAX_MINT_BATCH} mints per call; split the batch`, "BATCH_TOO_LARGE");
      // Every item is the caller's own host, checked before any is minted.
      for (const r of req.requests) requireHostCaller(ctx, r.hostId);
      const results = [];
      for (const r of req.requests) {
        try {
          const minted = await d.exchange.accessToken({ longTermToken: r.longTermToken, hostId: r.hostId, vmId: r.vmId, scopes: r.scopes });
          results.push({ token: { accessToken: minted.jwt, expiresInSeconds: minted.expiresIn, tokenType: "Bearer" }, errorStatus: "", errorReason: "", errorMessage: "" });
        } catch (e) {
          if (!(e instanceof TrustplaneError)) {
            ctx.logger.error({ err: (e as Error).message }, "a batched mint failed");
            results.push({ token: undefined, errorStatus: "INTERNAL", errorReason: "INTERNAL", errorMessage: "internal error" });
          } else results.push({ token: undefined, errorStatus: e.status, errorReason: e.reason, errorMessage: e.message });
        }
      }
      return { results };
    },

    async mintIdentityToken(req, ctx) {
      requireHostCaller(ctx, req.hostId);
      const format = req.format || "standard";
      if (format !== "standard" && format !== "full") throw invalidArgument("format", 'use "standard" or "full"', "FORMAT_INVALID");
      const minted = await d.exchange.identityToken({ longTermToken: req.longTermToken, hostId: req.hostId, vmId: req.vmId, audience: req.audience, format });
      return { idToken: minted.jwt, expiresInSeconds: minted.expiresIn };
    },

    async openHostSession(req, ctx) {
      // The host itself, not an admin acting for it: the key is sealed to the host anyway.
      if (!req.hostId) throw invalidArgument("host_id", "must name the calling agent's host");
      if (ctx.caller.principal !== `host:${req.hostId}`) {
        throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `principal ${ctx.caller.principal} may not open a session for host ${req.hostId}`, "host_id");
      }
      const opened = await d.sessions.open(req.hostId, ctx.caller.keyId);
      await audit(ctx, "token.host_session.open", req.hostId, { keyId: opened.keyId, expiresAtMs: opened.expiresAtMs });
      return { keyId: opened.keyId, sealedKey: Buffer.from(opened.sealedKey, "base64url"), expiresAtMs: opened.expiresAtMs };
    },

    async getJwks() {
      return { jwksJson: JSON.stringify(d.keys.jwks()), jwksUrl: d.jwksUrl(), issuer: d.issuer };
    },

    watchTokenUpdates(req, ctx) {
      requireHostCaller(ctx, req.hostId);
      return watch(d, req, ctx);
    },
  };
}

/**
 * The per-host push stream: the backlog after `after_seq` when the stream resumes exactly on
 * this replica, otherwise a resynchronisation from storage against what the agent holds;
 * then live updates until cancelled. If this replica may have missed updates while the
 * stream is open, the stream ends UNAVAILABLE so the agent reconnects and resynchronises.
 */
async function* watch(d: TokenServiceDeps, req: WatchTokenUpdatesRequest, ctx: CallContext): AsyncIterable<WatchTokenUpdatesResponse> {
  const { hostId } = req;
  const queue: DeliveredUpdate[] = [];
  let wake: (() => void) | undefined;
  let subscribed = false;
  // A seq numbered by another replica (failover, restart) says nothing about this one's backlog.
  let resync = !(req.afterSeq > 0 && req.replicaId === d.hub.replicaId);
  let broken = false;
  const unsubscribe = d.hub.subscribe(
    hostId,
    (u) => {
      queue.push(u);
      wake?.();
    },
    {
      afterSeq: resync ? undefined : req.afterSeq,
      onGap: () => {
        if (!subscribed) resync = true;
        else {
          broken = true;
          wake?.();
        }
      },
    },
  );
  subscribed = true;
  const signal = ctx.signal;
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    if (resync && req.held.length > 0) {
      // Subscribed first, so the rotations this causes arrive on this very stream.
      const done = await d.longTermTokens.resyncHost(hostId, req.held);
      ctx.logger.info({ hostId, held: req.held.length, ...done }, "token updates resynchronised from storage");
      for (const accessor of done.rotated) await auditFor(d, ctx, "token.long_term.resync_rotate", accessor, { hostId });
      for (const accessor of done.revoked) await auditFor(d, ctx, "token.long_term.resync_revoke", accessor, { hostId });
    }
    while (!signal.aborted) {
      if (broken) throw new TrustplaneError("UNAVAILABLE", "TOKEN_UPDATES_GAP", "this replica may have missed token updates; reconnect to resynchronise");
      const next = queue.shift();
      if (!next) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      yield await toMessage(d, next);
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    unsubscribe();
  }
}

async function toMessage(d: TokenServiceDeps, u: DeliveredUpdate): Promise<WatchTokenUpdatesResponse> {
  const base: WatchTokenUpdatesResponse = {
    seq: u.seq,
    kind: TokenUpdateKind.TOKEN_UPDATE_KIND_UNSPECIFIED,
    accessor: "",
    version: 0,
    sealedToken: new Uint8Array(0),
    vmId: "",
    serviceAccount: "",
    scopes: [],
    reason: "",
    expiresAtMs: 0,
    accounts: [],
    replicaId: d.hub.replicaId,
  };
  switch (u.kind) {
    case "ROTATED": {
      // A plaintext secret (published on this replica) is sealed here, per host, before it
      // leaves the process; one that crossed replicas arrives sealed already.
      const sealed = u.sealedToken ?? (u.token !== undefined ? await d.sealer.seal(u.hostId, u.token) : undefined);
      return {
        ...base,
        kind: TokenUpdateKind.TOKEN_UPDATE_KIND_ROTATED,
        accessor: u.accessor,
        version: u.version,
        serviceAccount: u.serviceAccount,
        scopes: u.scopes,
        expiresAtMs: u.expiresAtMs,
        sealedToken: sealed ? Buffer.from(sealed, "base64url") : new Uint8Array(0),
      };
    }
    case "REVOKED":
      return { ...base, kind: TokenUpdateKind.TOKEN_UPDATE_KIND_REVOKED, accessor: u.accessor, version: u.version, serviceAccount: u.serviceAccount, reason: u.reason };
    case "ACCOUNTS_CHANGED":
      return {
        ...base,
        kind: TokenUpdateKind.TOKEN_UPDATE_KIND_ACCOUNTS_CHANGED,
        vmId: u.vmId,
        accessor: u.accessor ?? "",
        accounts: u.accounts.map((a) => ({ serviceAccount: a.serviceAccount, scopes: a.scopes, accessor: a.accessor })),
      };
  }
}
