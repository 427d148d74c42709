// One VM's authorization process on the host (seed 000): holds the VM's long-term tokens in
// memory only, applies versioned rotations and revocations, renews at half-life ±10 % jitter,
// adds and removes accounts at runtime, and serves them through the metadata endpoint.
import type { AddressInfo } from "node:net";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { Logger } from "../../runtime/logger.js";
import type { TokenUpdate } from "../authority/token-update-hub.js";
import { MetadataServer, type MetadataAccount, type MetadataHealth, type MetadataServerOptions, type MetadataSource } from "./metadata-server.js";
import { TokenCache, type CachedToken, type TokenCacheOptions, type TokenUpstream } from "./token-cache.js";

export interface VmIdentity {
  vmId: string;
  hostId: string;
  hostname: string;
  instanceName: string;
  /** Short zone name, e.g. "local-a"; served as projects/NUM/zones/ZONE like GCE. */
  zone: string;
  projectId: string;
  numericProjectId: string;
}

/** One account on the VM with the secret that backs it. */
export interface AccountGrant {
  serviceAccount: string;
  scopes: string[];
  accessor: string;
  version: number;
  token: string;
  issuedAtMs: number;
  expiresAtMs: number;
}

/** Renews a long-term token at the authority (the TokenService client once wired). */
export interface LongTermTokenRenewer {
  renew(req: { longTermToken: string; hostId: string }): Promise<{ version: number; token?: string; issuedAtMs: number; expiresAtMs: number }>;
}

/** Delay from issue to renewal: half the lifetime, ±10 % uniformly, so hosts spread out. */
export function renewalDelayMs(issuedAtMs: number, expiresAtMs: number, random: () => number = Math.random): number {
  const half = (expiresAtMs - issuedAtMs) / 2;
  return Math.max(0, half * (0.9 + 0.2 * random()));
}

export interface VmAuthorizationProcessOptions {
  identity: VmIdentity;
  upstream: TokenUpstream;
  renewer?: LongTermTokenRenewer;
  /** Opens a rotated secret that crossed replicas sealed to this host's key. */
  unseal?: (sealedToken: string) => Promise<string>;
  logger?: Logger;
  cache?: Partial<Omit<TokenCacheOptions, "upstream" | "vmId" | "hostId" | "credential" | "onRefused">>;
  server?: Omit<MetadataServerOptions, "source" | "logger">;
  now?: () => number;
  random?: () => number;
}

interface HeldAccount {
  grant: AccountGrant;
  renewAtMs: number;
  timer?: NodeJS.Timeout;
}

export class VmAuthorizationProcess implements MetadataSource {
  readonly cache: TokenCache;
  private readonly held = new Map<string, HeldAccount>();
  private readonly listeners = new Set<() => void>();
  private readonly o: VmAuthorizationProcessOptions;
  private readonly now: () => number;
  private readonly random: () => number;
  private metadata?: MetadataServer;
  private stopped = false;
  private accountList?: MetadataAccount[];

  constructor(options: VmAuthorizationProcessOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.cache = new TokenCache({
      ...options.cache,
      now: options.cache?.now ?? this.now,
      upstream: options.upstream,
      vmId: options.identity.vmId,
      hostId: options.identity.hostId,
      credential: (account) => this.held.get(account)?.grant.token,
      onRefused: (account, error) => {
        // The authority will not honour this account's secret any more: stop offering it.
        this.log("warn", { account, reason: error.reason }, "authority refused the account's long-term token; removing it");
        this.removeAccount(account);
      },
    });
  }

  /** Starts the metadata endpoint (127.0.0.1:0 in tests, 169.254.169.254:80 in a VM's namespace). */
  async start(host: string, port: number): Promise<AddressInfo> {
    this.metadata = new MetadataServer({ ...this.o.server, source: this, logger: this.o.logger });
    const address = await this.metadata.listen(host, port);
    this.log("info", { vmId: this.o.identity.vmId, address: address.address, port: address.port }, "metadata endpoint listening");
    return address;
  }

  /** Where the metadata endpoint listens on the host side (the driver forwards the guest here). */
  endpoint(): AddressInfo | undefined {
    const a = this.metadata?.server.address();
    return a && typeof a === "object" ? a : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const h of this.held.values()) clearTimeout(h.timer);
    await this.metadata?.close();
  }

  /** Adds an account (or installs a newer version of one) without restarting anything. */
  addAccount(grant: AccountGrant): void {
    const existing = this.held.get(grant.serviceAccount);
    if (existing && existing.grant.accessor === grant.accessor) {
      this.install(grant.serviceAccount, grant);
      return;
    }
    if (existing) {
      // A different long-term token for the account (re-acquired after a revocation, or new
      // scopes): its versions are unrelated to the old one's, so replace rather than compare.
      clearTimeout(existing.timer);
      this.held.delete(grant.serviceAccount);
      this.cache.dropAccount(grant.serviceAccount);
    }
    const held: HeldAccount = { grant: { ...grant, scopes: [...grant.scopes].sort() }, renewAtMs: 0 };
    this.held.set(grant.serviceAccount, held);
    this.schedule(held);
    this.log("info", { account: grant.serviceAccount, accessor: grant.accessor, version: grant.version }, "service account added");
    this.changed();
  }

  removeAccount(email: string): boolean {
    const held = this.held.get(email);
    if (!held) return false;
    clearTimeout(held.timer);
    this.held.delete(email);
    this.cache.dropAccount(email);
    this.log("info", { account: email, accessor: held.grant.accessor }, "service account removed");
    this.changed();
    return true;
  }

  /** Applies a pushed update; older versions than the one held are ignored. */
  async applyUpdate(update: TokenUpdate): Promise<void> {
    if (update.hostId !== this.o.identity.hostId) return;
    if (update.kind === "ACCOUNTS_CHANGED") {
      if (update.vmId !== this.o.identity.vmId) return;
      const keep = new Set(update.accounts.map((a) => a.accessor));
      // A change naming the token the VM stopped holding drops only that one: pushes and the
      // VM manager's direct updates are not ordered, so a complete list pushed earlier must
      // not undo an account the VM manager has added since.
      for (const [email, h] of [...this.held]) {
        if (keep.has(h.grant.accessor)) continue;
        if (update.accessor === undefined || update.accessor === h.grant.accessor) this.removeAccount(email);
      }
      return;
    }
    const entry = [...this.held.values()].find((h) => h.grant.accessor === update.accessor);
    if (!entry) return;
    if (update.kind === "REVOKED") {
      this.log("info", { account: entry.grant.serviceAccount, accessor: update.accessor, reason: update.reason }, "long-term token revoked");
      this.removeAccount(entry.grant.serviceAccount);
      return;
    }
    let token = update.token;
    if (token === undefined && update.sealedToken !== undefined && this.o.unseal) token = await this.o.unseal(update.sealedToken);
    if (token === undefined) {
      this.log("warn", { accessor: update.accessor, version: update.version }, "rotation arrived without a secret this host can open");
      return;
    }
    this.install(entry.grant.serviceAccount, {
      ...entry.grant,
      version: update.version,
      token,
      issuedAtMs: this.now(),
      expiresAtMs: update.expiresAtMs,
    });
  }

  /**
   * The newest grant held under `accessor`, secret included: lets another VM on this host
   * that the authority added as a holder of the same token share it (in memory only).
   */
  grantFor(accessor: string): AccountGrant | undefined {
    for (const h of this.held.values()) if (h.grant.accessor === accessor) return { ...h.grant, scopes: [...h.grant.scopes] };
    return undefined;
  }

  /** The grants held (secrets included; for this host's token manager only). */
  grants(): AccountGrant[] {
    return [...this.held.values()].map((h) => ({ ...h.grant, scopes: [...h.grant.scopes] }));
  }

  /** Version of the long-term token held for an account (tests and health). */
  heldVersion(email: string): number | undefined {
    return this.held.get(email)?.grant.version;
  }

  /** When the account's long-term token will be renewed. */
  renewalAt(email: string): number | undefined {
    return this.held.get(email)?.renewAtMs;
  }

  // MetadataSource

  instance() {
    const id = this.o.identity;
    return { id: id.vmId, hostname: id.hostname, name: id.instanceName, zone: `projects/${id.numericProjectId}/zones/${id.zone}` };
  }

  project() {
    return { projectId: this.o.identity.projectId, numericProjectId: this.o.identity.numericProjectId };
  }

  accounts(): MetadataAccount[] {
    // Rebuilt only when accounts change: the endpoint reads this on every request.
    this.accountList ??= [...this.held.values()].map((h) => ({ email: h.grant.serviceAccount, scopes: h.grant.scopes }));
    return this.accountList;
  }

  onAccountsChanged(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  accessToken(email: string, scopes: string[]): CachedToken | Promise<CachedToken> {
    return this.cache.getAccessToken(email, scopes);
  }

  identityToken(email: string, audience: string, format: "standard" | "full"): CachedToken | Promise<CachedToken> {
    return this.cache.getIdentityToken(email, audience, format);
  }

  health(): MetadataHealth {
    const h = this.cache.health();
    const base = { accounts: this.held.size, cachedTokens: this.cache.size(), upstreamReachable: h.upstreamReachable, lastUpstreamError: h.lastUpstreamError };
    if (h.upstreamReachable) return { status: "SERVING", message: "serving", ...base };
    if (this.cache.size() > 0) return { status: "SERVING_STALE", message: "serving stale cache, authority unreachable", ...base };
    return { status: "NOT_SERVING", message: "authority unreachable and no cached tokens", ...base };
  }

  private install(email: string, next: AccountGrant): void {
    const held = this.held.get(email);
    if (!held) return;
    // Pushes and renewal answers can cross; the newest version wins. Requests already in
    // flight keep the older secret, which the authority honours through its grace period.
    if (next.version <= held.grant.version) return;
    held.grant = { ...held.grant, version: next.version, token: next.token, issuedAtMs: next.issuedAtMs, expiresAtMs: next.expiresAtMs };
    this.schedule(held);
    this.log("info", { account: email, accessor: held.grant.accessor, version: next.version }, "long-term token rotated");
  }

  private schedule(held: HeldAccount, delayOverrideMs?: number): void {
    clearTimeout(held.timer);
    if (this.stopped) return;
    const nowMs = this.now();
    held.renewAtMs = delayOverrideMs !== undefined ? nowMs + delayOverrideMs : held.grant.issuedAtMs + renewalDelayMs(held.grant.issuedAtMs, held.grant.expiresAtMs, this.random);
    if (!this.o.renewer) return;
    // setTimeout holds at most ~24.8 days; re-arm if needed.
    const delay = Math.min(Math.max(0, held.renewAtMs - nowMs), 2 ** 31 - 1);
    held.timer = setTimeout(() => void this.renew(held.grant.serviceAccount), delay);
    held.timer.unref();
  }

  private async renew(email: string): Promise<void> {
    const held = this.held.get(email);
    if (!held || !this.o.renewer || this.stopped) return;
    const before = held.grant.version;
    try {
      const renewed = await this.o.renewer.renew({ longTermToken: held.grant.token, hostId: this.o.identity.hostId });
      if (renewed.token !== undefined) {
        this.install(email, { ...held.grant, version: renewed.version, token: renewed.token, issuedAtMs: renewed.issuedAtMs, expiresAtMs: renewed.expiresAtMs });
      }
      // No new secret for us (another host renewed first and its push is on the way): check back soon.
      if (this.held.get(email) === held && held.grant.version === before) this.schedule(held, 5_000);
    } catch (error) {
      if (error instanceof TrustplaneError && (error.status === "UNAUTHENTICATED" || error.status === "PERMISSION_DENIED")) {
        this.log("warn", { account: email, reason: error.reason }, "renewal refused; removing the account");
        this.removeAccount(email);
        return;
      }
      const left = held.grant.expiresAtMs - this.now();
      const retry = Math.max(1_000, Math.min(30_000, left / 10));
      this.log("warn", { account: email, retryMs: Math.round(retry) }, "renewal failed; will retry");
      this.schedule(held, retry);
    }
  }

  private changed(): void {
    this.accountList = undefined;
    for (const l of [...this.listeners]) l();
  }

  private log(level: "info" | "warn", fields: Record<string, unknown>, message: string): void {
    this.o.logger?.[level](fields, message);
  }
}
