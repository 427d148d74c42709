// Long-term tokens of seed 000: opaque 256-bit secrets (`tplt_` + base64url) kept only as
// SHA-256 hashes, one per (service account, scope set), bound to the hosts they went to, with
// Vault-style accessors for revocation, versions for rotation and holder VMs ("revoke when
// the last VM terminates"). Refresh may only narrow scope (RFC 6749 section 6).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import { canonicalScopes, type ServiceAccountRegistry } from "./service-accounts.js";
import type { TokenRecordCache } from "./token-record-cache.js";
import type { TokenUpdateHub } from "./token-update-hub.js";

export const LONG_TERM_TOKEN_PREFIX = "tplt_";
/** Lost compare-and-set races redone before the caller sees ABORTED (and may retry itself). */
const MAX_CONFLICT_RETRIES = 16;
export const ACCESSOR_PREFIX = "tpla_";
const TOKEN_SHAPE = /^tplt_[A-Za-z0-9_-]{43}$/;

export interface TokenHolder {
  vmId: string;
  hostId: string;
  /**
   * The user whose verified signed request made this hold. A re-delivery to the VM checks
   * them against the ACL again; holds from before it was recorded carry none.
   */
  principal?: string;
}

/** One long-term token as stored. There is no secret here, only its hash. */
export interface LongTermTokenRecord {
  /** Public handle for revocation and audit; safe to log. */
  accessor: string;
  serviceAccount: string;
  /** Canonical (sorted, unique) scope set. */
  scopes: string[];
  /** hex SHA-256 of the current secret. */
  tokenHash: string;
  version: number;
  /** The secret of the previous version stays valid briefly so racing requests never fail. */
  previousTokenHash?: string;
  previousValidUntilMs?: number;
  hostIds: string[];
  holders: TokenHolder[];
  createdAtMs: number;
  /** When the current version was issued and when it stops being accepted. */
  issuedAtMs: number;
  expiresAtMs: number;
  revokedAtMs?: number;
  revokeReason?: string;
}

/**
 * Storage for long-term tokens. SQL: index on token_hash and previous_token_hash, and a unique
 * partial index on (service_account, scope_key) WHERE revoked_at IS NULL.
 */
export interface LongTermTokenStore {
  /** ABORTED LONG_TERM_TOKEN_RACE when a live token for the pair already exists. */
  insert(record: LongTermTokenRecord): Promise<void>;
  /**
   * Compare-and-set against `expected` (the record as read): ABORTED LONG_TERM_TOKEN_CONFLICT
   * when another writer (another replica) changed it since.
   */
  update(record: LongTermTokenRecord, expected: LongTermTokenRecord): Promise<void>;
  /** Finds the record whose current or previous hash equals `hash`. */
  findByHash(hash: string): Promise<LongTermTokenRecord | undefined>;
  findByAccessor(accessor: string): Promise<LongTermTokenRecord | undefined>;
  /** The unrevoked record for the pair, if any. */
  findActive(serviceAccount: string, scopeKey: string): Promise<LongTermTokenRecord | undefined>;
  listByHost(hostId: string): Promise<LongTermTokenRecord[]>;
  /** The account's unrevoked tokens (every scope set). */
  listActiveByAccount(serviceAccount: string): Promise<LongTermTokenRecord[]>;
}

export function scopeKey(scopes: readonly string[]): string {
  return scopes.join(" ");
}

/** What a compare-and-set compares: the fields any change of a token moves. */
function sameState(a: LongTermTokenRecord, b: LongTermTokenRecord): boolean {
  return (
    a.version === b.version &&
    a.tokenHash === b.tokenHash &&
    a.revokedAtMs === b.revokedAtMs &&
    JSON.stringify(a.holders) === JSON.stringify(b.holders) &&
    JSON.stringify(a.hostIds) === JSON.stringify(b.hostIds)
  );
}

export class InMemoryLongTermTokenStore implements LongTermTokenStore {
  private readonly byAccessor = new Map<string, LongTermTokenRecord>();
  private readonly byHash = new Map<string, string>();

  async insert(record: LongTermTokenRecord) {
    if (this.byAccessor.has(record.accessor)) throw new TrustplaneError("ALREADY_EXISTS", "ACCESSOR_EXISTS", "accessor collision");
    if (record.revokedAtMs === undefined && (await this.findActive(record.serviceAccount, scopeKey(record.scopes)))) {
      throw new TrustplaneError("ABORTED", "LONG_TERM_TOKEN_RACE", "a live long-term token for this pair exists; retry");
    }
    this.write(record);
  }
  async update(record: LongTermTokenRecord, expected: LongTermTokenRecord) {
    const old = this.byAccessor.get(record.accessor);
    if (!old) throw new TrustplaneError("NOT_FOUND", "LONG_TERM_TOKEN_UNKNOWN", "no such long-term token");
    if (!sameState(old, expected)) throw new TrustplaneError("ABORTED", "LONG_TERM_TOKEN_CONFLICT", `long-term token ${record.accessor} changed meanwhile; retry`);
    this.byHash.delete(old.tokenHash);
    if (old.previousTokenHash) this.byHash.delete(old.previousTokenHash);
    this.write(record);
  }
  async findByHash(hash: string) {
    const accessor = this.byHash.get(hash);
    return accessor ? this.findByAccessor(accessor) : undefined;
  }
  async findByAccessor(accessor: string) {
    const r = this.byAccessor.get(accessor);
    return r ? structuredClone(r) : undefined;
  }
  async findActive(serviceAccount: string, key: string) {
    for (const r of this.byAccessor.values()) {
      if (r.revokedAtMs === undefined && r.serviceAccount === serviceAccount && scopeKey(r.scopes) === key) return structuredClone(r);
    }
    return undefined;
  }
  async listByHost(hostId: string) {
    return [...this.byAccessor.values()].filter((r) => r.hostIds.includes(hostId)).map((r) => structuredClone(r));
  }
  async listActiveByAccount(serviceAccount: string) {
    return [...this.byAccessor.values()].filter((r) => r.serviceAccount === serviceAccount && r.revokedAtMs === undefined).map((r) => structuredClone(r));
  }
  private write(record: LongTermTokenRecord) {
    const copy = structuredClone(record);
    this.byAccessor.set(copy.accessor, copy);
    this.byHash.set(copy.tokenHash, copy.accessor);
    if (copy.previousTokenHash) this.byHash.set(copy.previousTokenHash, copy.accessor);
  }
}

/** What the host learns about a token: never the hash. `token` only when a new secret was made for it. */
export interface IssuedLongTermToken {
  accessor: string;
  serviceAccount: string;
  scopes: string[];
  version: number;
  issuedAtMs: number;
  expiresAtMs: number;
  token?: string;
}

export interface AuthenticatedLongTermToken {
  /** Shared with the cache when `fromCache`: never mutate it. */
  record: LongTermTokenRecord;
  /** The version the presented secret belongs to (current, or the previous one in its grace). */
  presentedVersion: number;
  /** The record came from the cache: a refusal derived from it must be re-checked fresh. */
  fromCache: boolean;
}

export interface LongTermTokensOptions {
  store: LongTermTokenStore;
  accounts: ServiceAccountRegistry;
  hub?: TokenUpdateHub;
  /** Caches records for authenticate(); invalidated through the hub (which it must be given). */
  cache?: TokenRecordCache;
  /** Lifetime of each version; holders renew at half-life. Default 24 h. */
  ttlMs?: number;
  /** How long the previous secret stays valid after a rotation. Default 5 min. */
  rotationGraceMs?: number;
  now?: () => number;
}

export function hashLongTermToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

function newSecret(): string {
  return LONG_TERM_TOKEN_PREFIX + randomBytes(32).toString("base64url");
}

function refused(reason: string, message: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", reason, message, "long_term_token");
}

export class LongTermTokens {
  private readonly store: LongTermTokenStore;
  private readonly accounts: ServiceAccountRegistry;
  private readonly hub?: TokenUpdateHub;
  private readonly ttlMs: number;
  private readonly graceMs: number;
  private readonly now: () => number;
  /**
   * Serialises every change inside this replica (changes are rare next to exchanges), so
   * only changes from other replicas ever meet in the store's compare-and-set.
   */
  private lock: Promise<unknown> = Promise.resolve();
  /** Each record as it was read, for the compare-and-set of its next write. */
  private readonly asRead = new WeakMap<LongTermTokenRecord, LongTermTokenRecord>();
  private readonly cache?: TokenRecordCache;

  constructor(options: LongTermTokensOptions) {
    this.store = options.store;
    this.accounts = options.accounts;
    this.hub = options.hub;
    this.ttlMs = options.ttlMs ?? 24 * 3600_000;
    this.graceMs = options.rotationGraceMs ?? 5 * 60_000;
    this.now = options.now ?? Date.now;
    this.cache = options.cache;
    if (this.cache) {
      const cache = this.cache;
      // Every change that narrows what a token may do is published; a gap drops everything.
      options.hub?.onAny((u) => (u === undefined ? cache.clear() : "accessor" in u && u.accessor ? cache.invalidate(u.accessor) : cache.clear()));
    }
  }

  /**
   * Gives `hostId` the long-term token for (account, scopes) on behalf of `vmId`.
   * `principal` must come from the user's verified signed create request; they must be on
   * the account's ACL. The token is shared: an existing one gains the VM as holder, and a
   * new secret is minted (a rotation pushed to every holding host) only when this host does
   * not already hold the current version — the authority keeps hashes, so it cannot resend.
   */
  async acquire(input: {
    principal: string;
    serviceAccount: string;
    scopes: readonly string[];
    hostId: string;
    vmId: string;
    /** The version this host already holds, if any. */
    hostHasVersion?: number;
  }): Promise<IssuedLongTermToken> {
    requireId("hostId", input.hostId);
    requireId("vmId", input.vmId);
    const account = await this.accounts.requireActAs(input.principal, input.serviceAccount);
    const scopes = canonicalScopes(input.scopes);
    this.accounts.requireAllowedScopes(account, scopes);
    await this.accounts.audiencesForScopes(scopes);
    return this.locked(async () => {
      const existing = this.track(await this.store.findActive(input.serviceAccount, scopeKey(scopes)));
      if (!existing || existing.expiresAtMs <= this.now()) {
        if (existing) await this.markRevoked(existing, "EXPIRED");
        return this.create(input.serviceAccount, scopes, { vmId: input.vmId, hostId: input.hostId, principal: input.principal });
      }
      if (!existing.holders.some((h) => h.vmId === input.vmId && h.hostId === input.hostId)) {
        existing.holders.push({ vmId: input.vmId, hostId: input.hostId, principal: input.principal });
      }
      const hostHolds = existing.hostIds.includes(input.hostId) && input.hostHasVersion === existing.version;
      if (!existing.hostIds.includes(input.hostId)) existing.hostIds.push(input.hostId);
      if (hostHolds) {
        await this.save(existing);
        return view(existing);
      }
      return this.rotateRecord(existing);
    });
  }

  /**
   * Validates a presented secret for `hostId`. Lookup is by hash (an indexed equality on a
   * digest, so timing reveals nothing about stored secrets); the digest is then compared in
   * constant time to tell the current version from the previous one.
   */
  async authenticate(token: string, hostId: string, options: { fresh?: boolean } = {}): Promise<AuthenticatedLongTermToken> {
    if (typeof token !== "string" || !TOKEN_SHAPE.test(token)) {
      throw refused("LONG_TERM_TOKEN_MALFORMED", "not a long-term token (expected tplt_ followed by 43 base64url characters)");
    }
    const digest = hashLongTermToken(token);
    const cached = options.fresh ? undefined : this.cache?.get(digest);
    if (cached) {
      try {
        return this.check(cached, digest, hostId, true);
      } catch {
        // A cached record may lag a change that widened it (a new holder or host): only
        // storage may refuse.
      }
    }
    const epoch = this.cache?.mark() ?? 0;
    const record = await this.store.findByHash(digest);
    if (record) this.cache?.put(record, epoch);
    if (!record) throw refused("LONG_TERM_TOKEN_UNKNOWN", "unknown long-term token; the host must acquire a new one");
    return this.check(record, digest, hostId, false);
  }

  private check(record: LongTermTokenRecord, digest: string, hostId: string, fromCache: boolean): AuthenticatedLongTermToken {
    if (record.revokedAtMs !== undefined) {
      throw refused("LONG_TERM_TOKEN_REVOKED", `long-term token ${record.accessor} was revoked (${record.revokeReason ?? "revoked"})`);
    }
    const nowMs = this.now();
    const digestBytes = Buffer.from(digest, "hex");
    let presentedVersion: number;
    if (timingSafeEqual(Buffer.from(record.tokenHash, "hex"), digestBytes)) {
      presentedVersion = record.version;
      if (record.expiresAtMs <= nowMs) throw refused("LONG_TERM_TOKEN_EXPIRED", `long-term token ${record.accessor} expired; renew before half-life`);
    } else if (record.previousTokenHash && timingSafeEqual(Buffer.from(record.previousTokenHash, "hex"), digestBytes)) {
      if ((record.previousValidUntilMs ?? 0) <= nowMs) {
        throw refused("LONG_TERM_TOKEN_ROTATED", `long-term token ${record.accessor} was rotated to version ${record.version}; use the newest version`);
      }
      presentedVersion = record.version - 1;
    } else {
      throw refused("LONG_TERM_TOKEN_UNKNOWN", "unknown long-term token");
    }
    if (!record.hostIds.includes(hostId)) {
      throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `long-term token ${record.accessor} was not issued to host ${hostId}`, "host_id");
    }
    return { record, presentedVersion, fromCache };
  }

  /**
   * RFC 6749 refresh rule: the requested scopes must be a subset of the token's; no request
   * means all of them. Returns the canonical requested set.
   */
  narrowScopes(record: LongTermTokenRecord, requested?: readonly string[]): string[] {
    if (!requested || requested.length === 0) return [...record.scopes];
    const wanted = canonicalScopes(requested);
    const extra = wanted.filter((s) => !record.scopes.includes(s));
    if (extra.length > 0) {
      throw new TrustplaneError(
        "PERMISSION_DENIED",
        "SCOPE_ESCALATION",
        `scope(s) ${extra.join(", ")} exceed the grant of ${record.serviceAccount} on this VM`,
        "scopes",
      );
    }
    return wanted;
  }

  /** A holder renews (at half-life): new secret, version + 1, pushed to every holding host. */
  async renew(token: string, hostId: string): Promise<IssuedLongTermToken> {
    const { record } = await this.authenticate(token, hostId);
    return this.locked(async () => {
      const fresh = this.track(await this.store.findByAccessor(record.accessor));
      if (!fresh || fresh.revokedAtMs !== undefined) throw refused("LONG_TERM_TOKEN_REVOKED", `long-term token ${record.accessor} was revoked`);
      // Two holders renewing at once: the second gets the version the first just made
      // through the push, so it need not rotate again.
      if (fresh.version !== record.version) return view(fresh);
      return this.rotateRecord(fresh);
    });
  }

  /** Operator rotation by accessor (suspected leak): new secret pushed to all holders. */
  async rotate(accessor: string): Promise<IssuedLongTermToken> {
    return this.locked(async () => this.rotateRecord(await this.requireActive(accessor)));
  }

  /**
   * A VM that holds the token lost its secret (its host's agent restarted, and agents keep
   * secrets in memory only): a new secret for it. The hold itself is the proof — the authority
   * made it against the user's verified request — so only an unrevoked, unexpired token whose
   * holders include (vm, host) qualifies, and the user who made the hold must still be on the
   * account's ACL with the token's scopes still allowed, as at issue. The authority keeps
   * hashes only, so this is a rotation, pushed to every bound host as any rotation is.
   */
  async redeliver(input: { accessor: string; hostId: string; vmId: string }): Promise<IssuedLongTermToken & { principal: string }> {
    requireId("hostId", input.hostId);
    requireId("vmId", input.vmId);
    const record = await this.requireActive(input.accessor);
    const holder = record.holders.find((h) => h.vmId === input.vmId && h.hostId === input.hostId);
    if (!holder) {
      throw new TrustplaneError("FAILED_PRECONDITION", "NOT_A_HOLDER", `VM ${input.vmId} on host ${input.hostId} does not hold long-term token ${input.accessor}; issue it with the user's signed request`, "vm_id");
    }
    if (record.expiresAtMs <= this.now()) {
      throw refused("LONG_TERM_TOKEN_EXPIRED", `long-term token ${input.accessor} expired; issue a new one with the user's signed request`);
    }
    if (!holder.principal) {
      throw new TrustplaneError("FAILED_PRECONDITION", "HOLDER_PRINCIPAL_UNKNOWN", `the hold of VM ${input.vmId} on ${input.accessor} predates recorded authorisations; set the VM's service accounts again`, "vm_id");
    }
    const account = await this.accounts.requireActAs(holder.principal, record.serviceAccount);
    this.accounts.requireAllowedScopes(account, record.scopes);
    await this.accounts.audiencesForScopes(record.scopes);
    const issued = await this.locked(async () => {
      const fresh = this.track(await this.store.findByAccessor(input.accessor));
      if (!fresh || fresh.revokedAtMs !== undefined) throw refused("LONG_TERM_TOKEN_REVOKED", `long-term token ${input.accessor} was revoked`);
      if (!fresh.holders.some((h) => h.vmId === input.vmId && h.hostId === input.hostId) || !fresh.hostIds.includes(input.hostId)) {
        throw new TrustplaneError("FAILED_PRECONDITION", "NOT_A_HOLDER", `VM ${input.vmId} on host ${input.hostId} no longer holds long-term token ${input.accessor}`, "vm_id");
      }
      return this.rotateRecord(fresh);
    });
    return { ...issued, principal: holder.principal };
  }

  /** A VM terminated or dropped the account: when no VM holds the token any more, revoke it. */
  async release(input: { accessor: string; vmId: string }): Promise<{ revoked: boolean }> {
    return this.locked(async () => {
      const record = this.track(await this.store.findByAccessor(input.accessor));
      if (!record || record.revokedAtMs !== undefined) return { revoked: false };
      const gone = record.holders.filter((h) => h.vmId === input.vmId);
      record.holders = record.holders.filter((h) => h.vmId !== input.vmId);
      // A host with no holder left loses the binding, and is told to drop the secret.
      const unbound: string[] = [];
      for (const { hostId } of gone) {
        if (!record.holders.some((h) => h.hostId === hostId)) {
          record.hostIds = record.hostIds.filter((h) => h !== hostId);
          unbound.push(hostId);
        }
      }
      if (record.holders.length === 0) {
        await this.markRevoked(record, "LAST_HOLDER_GONE", gone.map((h) => h.hostId));
        return { revoked: true };
      }
      await this.save(record);
      if (unbound.length > 0) await this.publishRevoked(record, unbound, "HOST_RELEASED");
      // Other VMs on the host keep the secret; only this VM's authorization process drops it.
      for (const { hostId } of gone) if (!unbound.includes(hostId)) await this.publishAccountsChanged(hostId, input.vmId, record.accessor);
      return { revoked: false };
    });
  }

  /** Vault-style revocation by accessor; every agent holding it drops it at once. */
  async revoke(accessor: string, reason = "REVOKED_BY_OPERATOR"): Promise<void> {
    await this.locked(async () => {
      const record = this.track(await this.store.findByAccessor(accessor));
      if (!record) throw new TrustplaneError("NOT_FOUND", "LONG_TERM_TOKEN_UNKNOWN", `no long-term token with accessor ${accessor}`, "accessor");
      if (record.revokedAtMs === undefined) await this.markRevoked(record, reason);
    });
  }

  /**
   * Brings a host that may have missed pushes (a stream that could not resume exactly) back
   * in line with storage, from what its agent says it holds. A token the host may no longer
   * hold is pushed as REVOKED; a VM no longer among the holders is told to drop it; a token
   * whose current version the host lacks is rotated, since the authority keeps only hashes
   * and cannot resend a secret: the new one reaches every bound host sealed, as any rotation.
   */
  async resyncHost(hostId: string, held: readonly { accessor: string; serviceAccount: string; version: number; vmIds: readonly string[] }[]): Promise<{ rotated: string[]; revoked: string[] }> {
    const rotated: string[] = [];
    const revoked: string[] = [];
    if (held.length === 0) return { rotated, revoked };
    const bound = new Map((await this.store.listByHost(hostId)).map((r) => [r.accessor, r]));
    for (const h of held) {
      const r = bound.get(h.accessor);
      if (!r || r.revokedAtMs !== undefined || r.expiresAtMs <= this.now()) {
        if (r && r.revokedAtMs === undefined) await this.locked(async () => {
          const fresh = this.track(await this.store.findByAccessor(h.accessor));
          if (fresh && fresh.revokedAtMs === undefined && fresh.expiresAtMs <= this.now()) await this.markRevoked(fresh, "EXPIRED");
        });
        if (this.hub) {
          await this.hub.publish({ kind: "REVOKED", hostId, accessor: h.accessor, serviceAccount: r?.serviceAccount ?? h.serviceAccount, version: Math.max(h.version, r?.version ?? 0), reason: r?.revokeReason ?? (r ? "EXPIRED" : "HOST_RELEASED") });
        }
        revoked.push(h.accessor);
        continue;
      }
      for (const vmId of h.vmIds) {
        if (!r.holders.some((x) => x.vmId === vmId && x.hostId === hostId)) await this.publishAccountsChanged(hostId, vmId, h.accessor);
      }
      if (h.version < r.version) {
        const done = await this.locked(async () => {
          const fresh = this.track(await this.store.findByAccessor(h.accessor));
          // Someone else rotated meanwhile: that push is on its way to the host already.
          if (!fresh || fresh.revokedAtMs !== undefined || !fresh.hostIds.includes(hostId) || fresh.version !== r.version) return false;
          await this.rotateRecord(fresh);
          return true;
        });
        if (done) rotated.push(h.accessor);
      }
    }
    return { rotated, revoked };
  }

  /** The account is gone: every token of it is revoked and every holding agent told at once. */
  async revokeAccount(serviceAccount: string, reason = "ACCOUNT_DELETED"): Promise<string[]> {
    const revoked: string[] = [];
    for (const r of await this.store.listActiveByAccount(serviceAccount)) {
      await this.revoke(r.accessor, reason);
      revoked.push(r.accessor);
    }
    return revoked;
  }

  /** Public view by accessor (no hash), e.g. for `trustplane token inspect`. */
  async describe(accessor: string): Promise<Omit<LongTermTokenRecord, "tokenHash" | "previousTokenHash">> {
    const record = await this.store.findByAccessor(accessor);
    if (!record) throw new TrustplaneError("NOT_FOUND", "LONG_TERM_TOKEN_UNKNOWN", `no long-term token with accessor ${accessor}`, "accessor");
    const { tokenHash: _h, previousTokenHash: _p, ...rest } = record;
    return rest;
  }

  private async create(serviceAccount: string, scopes: string[], holder: TokenHolder): Promise<IssuedLongTermToken> {
    const token = newSecret();
    const nowMs = this.now();
    const record: LongTermTokenRecord = {
      accessor: ACCESSOR_PREFIX + randomBytes(16).toString("base64url"),
      serviceAccount,
      scopes,
      tokenHash: hashLongTermToken(token),
      version: 1,
      hostIds: [holder.hostId],
      holders: [holder],
      createdAtMs: nowMs,
      issuedAtMs: nowMs,
      expiresAtMs: nowMs + this.ttlMs,
    };
    await this.store.insert(record);
    return { ...view(record), token };
  }

  private async rotateRecord(record: LongTermTokenRecord): Promise<IssuedLongTermToken> {
    const token = newSecret();
    const nowMs = this.now();
    record.previousTokenHash = record.tokenHash;
    record.previousValidUntilMs = Math.min(record.expiresAtMs, nowMs + this.graceMs);
    record.tokenHash = hashLongTermToken(token);
    record.version += 1;
    record.issuedAtMs = nowMs;
    record.expiresAtMs = nowMs + this.ttlMs;
    await this.save(record);
    if (this.hub) {
      for (const hostId of record.hostIds) {
        await this.hub.publish({
          kind: "ROTATED",
          hostId,
          accessor: record.accessor,
          serviceAccount: record.serviceAccount,
          scopes: [...record.scopes],
          version: record.version,
          token,
          expiresAtMs: record.expiresAtMs,
        });
      }
    }
    return { ...view(record), token };
  }

  private async markRevoked(record: LongTermTokenRecord, reason: string, extraHosts: string[] = []): Promise<void> {
    record.revokedAtMs = this.now();
    record.revokeReason = reason;
    await this.save(record);
    await this.publishRevoked(record, [...new Set([...record.hostIds, ...extraHosts])], reason);
  }

  private async publishRevoked(record: LongTermTokenRecord, hostIds: string[], reason: string): Promise<void> {
    if (!this.hub) return;
    for (const hostId of hostIds) {
      await this.hub.publish({ kind: "REVOKED", hostId, accessor: record.accessor, serviceAccount: record.serviceAccount, version: record.version, reason });
    }
  }

  /** Tells the host which tokens `vmId` still holds after it released `accessor`. */
  private async publishAccountsChanged(hostId: string, vmId: string, accessor: string): Promise<void> {
    if (!this.hub) return;
    const accounts = (await this.store.listByHost(hostId))
      .filter((r) => r.revokedAtMs === undefined && r.holders.some((h) => h.vmId === vmId && h.hostId === hostId))
      .map((r) => ({ serviceAccount: r.serviceAccount, scopes: [...r.scopes], accessor: r.accessor }));
    await this.hub.publish({ kind: "ACCOUNTS_CHANGED", hostId, vmId, accessor, accounts });
  }

  private async requireActive(accessor: string): Promise<LongTermTokenRecord> {
    const record = this.track(await this.store.findByAccessor(accessor));
    if (!record) throw new TrustplaneError("NOT_FOUND", "LONG_TERM_TOKEN_UNKNOWN", `no long-term token with accessor ${accessor}`, "accessor");
    if (record.revokedAtMs !== undefined) throw refused("LONG_TERM_TOKEN_REVOKED", `long-term token ${accessor} was revoked`);
    return record;
  }

  private track(record: LongTermTokenRecord | undefined): LongTermTokenRecord | undefined {
    if (record) this.asRead.set(record, structuredClone(record));
    return record;
  }

  /** Writes a record read through track(), only if nobody changed it since. */
  private async save(record: LongTermTokenRecord): Promise<void> {
    const expected = this.asRead.get(record);
    if (!expected) throw new TrustplaneError("INTERNAL", "LONG_TERM_TOKEN_UNTRACKED", "a long-term token write without the state it was read in");
    await this.store.update(record, expected);
    this.cache?.invalidate(record.accessor);
    this.asRead.set(record, structuredClone(record));
  }

  /**
   * One change at a time in this replica; a change that lost a race to another replica (the
   * store's compare-and-set or the one-live-token index) is re-read and redone, with jitter
   * so two replicas do not collide again in lockstep. Nothing is published before a write
   * succeeded, so a retried attempt leaves no stray push behind.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const attempt = async (): Promise<T> => {
      for (let n = 0; ; n++) {
        try {
          return await fn();
        } catch (e) {
          const lost = e instanceof TrustplaneError && (e.reason === "LONG_TERM_TOKEN_CONFLICT" || e.reason === "LONG_TERM_TOKEN_RACE");
          if (!lost || n >= MAX_CONFLICT_RETRIES) throw e;
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 ** n)));
        }
      }
    };
    const run = this.lock.then(attempt, attempt);
    this.lock = run.catch(() => undefined);
    return run;
  }
}

function view(record: LongTermTokenRecord): IssuedLongTermToken {
  return {
    accessor: record.accessor,
    serviceAccount: record.serviceAccount,
    scopes: [...record.scopes],
    version: record.version,
    issuedAtMs: record.issuedAtMs,
    expiresAtMs: record.expiresAtMs,
  };
}

function requireId(field: string, value: string): void {
  if (typeof value !== "string" || value.length === 0 || value.length > 256) {
    throw invalidArgument(field, "must be a non-empty string of at most 256 characters");
  }
}
