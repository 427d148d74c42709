// The VM authorization process's short-term token cache (seed 000): per (account, scopes) and
// (account, audience, format); refreshed well before the 5-minute eager-refresh threshold of
// Google's clients; concurrent misses share one upstream call; a still-valid token is served
// when the authority is unreachable (and health says so); a revoke drops an account at once.
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export interface UpstreamToken {
  token: string;
  expiresAtMs: number;
}

/** The authority as the agent sees it (the gRPC TokenService client once wired). */
export interface TokenUpstream {
  mintAccessToken(req: { longTermToken: string; hostId: string; vmId: string; scopes?: string[] }): Promise<UpstreamToken>;
  mintIdentityToken(req: {
    longTermToken: string;
    hostId: string;
    vmId: string;
    audience: string;
    format?: "standard" | "full";
  }): Promise<UpstreamToken>;
}

export interface CachedToken extends UpstreamToken {
  /** True when served past the refresh point because the authority could not be reached. */
  stale: boolean;
}

/** Google's clients refresh when a token has 5 minutes or less left. */
export const CLIENT_EAGER_REFRESH_MS = 5 * 60_000;

export interface TokenCacheOptions {
  upstream: TokenUpstream;
  vmId: string;
  hostId: string;
  /** The newest long-term token held for an account, read at each upstream call. */
  credential: (account: string) => string | undefined;
  /** Never hand out a token with this little life left while the authority answers. Default 6 min. */
  minRemainingMs?: number;
  /** Start refreshing (while still serving the cached token) below this much life. Default 10 min. */
  refreshAheadMs?: number;
  /** While the authority is down, stop serving a token this close to expiry. Default 10 s. */
  staleFloorMs?: number;
  /**
   * Bound on cached tokens: a guest choosing a fresh identity audience per request must not
   * grow the host process without limit. Default 1024.
   */
  maxEntries?: number;
  /** Called when the authority refuses an account for good (revoked, unknown, not a holder). */
  onRefused?: (account: string, error: TrustplaneError) => void;
  now?: () => number;
}

export interface TokenCacheHealth {
  upstreamReachable: boolean;
  servingStale: boolean;
  lastUpstreamError?: string;
  lastUpstreamFailureAtMs?: number;
}

/** Immutable once cached, so a hit hands out the entry itself without copying. */
interface Entry extends CachedToken {
  readonly account: string;
  readonly stale: false;
}

// Answers from an authority that is up: the credential or the request will not work, so
// neither a retry nor a stale token is right. Anything else means "try again later".
const DEFINITIVE = new Set(["UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"]);
const RACE_REASONS = new Set(["LONG_TERM_TOKEN_ROTATED", "LONG_TERM_TOKEN_UNKNOWN"]);

export class TokenCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Entry>>();
  /** Bumped on dropAccount so a mint already in flight is not cached afterwards. */
  private readonly epochs = new Map<string, number>();
  private readonly o: Required<Omit<TokenCacheOptions, "onRefused">> & Pick<TokenCacheOptions, "onRefused">;
  private healthState: TokenCacheHealth = { upstreamReachable: true, servingStale: false };
  readonly stats = { hits: 0, misses: 0, upstreamCalls: 0, staleServed: 0 };

  constructor(options: TokenCacheOptions) {
    this.o = {
      minRemainingMs: 6 * 60_000,
      refreshAheadMs: 10 * 60_000,
      staleFloorMs: 10_000,
      maxEntries: 1024,
      now: Date.now,
      ...options,
    };
    if (this.o.minRemainingMs <= CLIENT_EAGER_REFRESH_MS) {
      throw new TrustplaneError("INVALID_ARGUMENT", "REFRESH_MARGIN_TOO_SMALL", "minRemainingMs must exceed the clients' 5-minute eager refresh threshold", "minRemainingMs");
    }
    if (this.o.refreshAheadMs < this.o.minRemainingMs) {
      throw new TrustplaneError("INVALID_ARGUMENT", "REFRESH_AHEAD_TOO_SMALL", "refreshAheadMs must be at least minRemainingMs", "refreshAheadMs");
    }
  }

  /** `scopes` must be canonical (sorted, unique); empty means the account's full grant. */
  getAccessToken(account: string, scopes: readonly string[]): Promise<CachedToken> | CachedToken {
    const key = `a\u0000${account}\u0000${scopes.join(" ")}`;
    return this.get(key, account, (longTermToken) =>
      this.o.upstream.mintAccessToken({
        longTermToken,
        hostId: this.o.hostId,
        vmId: this.o.vmId,
        scopes: scopes.length > 0 ? [...scopes] : undefined,
      }),
    );
  }

  getIdentityToken(account: string, audience: string, format: "standard" | "full"): Promise<CachedToken> | CachedToken {
    const key = `i\u0000${account}\u0000${format}\u0000${audience}`;
    return this.get(key, account, (longTermToken) =>
      this.o.upstream.mintIdentityToken({ longTermToken, hostId: this.o.hostId, vmId: this.o.vmId, audience, format }),
    );
  }

  /** Forgets every cached token of an account (revoked or removed from the VM). */
  dropAccount(account: string): void {
    this.epochs.set(account, (this.epochs.get(account) ?? 0) + 1);
    for (const [key, entry] of this.entries) if (entry.account === account) this.entries.delete(key);
  }

  health(): TokenCacheHealth {
    return { ...this.healthState };
  }

  size(): number {
    return this.entries.size;
  }

  // Returns synchronously on a fresh hit so the metadata endpoint's hot path awaits nothing.
  private get(key: string, account: string, mint: (longTermToken: string) => Promise<UpstreamToken>): Promise<CachedToken> | CachedToken {
    const entry = this.entries.get(key);
    const nowMs = this.o.now();
    if (entry) {
      const left = entry.expiresAtMs - nowMs;
      if (left > this.o.refreshAheadMs) {
        this.stats.hits++;
        return entry;
      }
      if (left > this.o.minRemainingMs) {
        // Still good for the client: serve it and refresh behind it.
        this.stats.hits++;
        this.refresh(key, account, mint).catch(() => undefined);
        return entry;
      }
    }
    this.stats.misses++;
    return this.refresh(key, account, mint).then(
      (fresh) => fresh,
      (error: unknown) => {
        const current = this.entries.get(key);
        if (!isRefusal(error) && current && current.expiresAtMs - this.o.now() > this.o.staleFloorMs) {
          this.stats.staleServed++;
          this.healthState.servingStale = true;
          return { token: current.token, expiresAtMs: current.expiresAtMs, stale: true };
        }
        throw error;
      },
    );
  }

  private refresh(key: string, account: string, mint: (longTermToken: string) => Promise<UpstreamToken>): Promise<Entry> {
    const running = this.inflight.get(key);
    if (running) return running;
    const epoch = this.epochs.get(account) ?? 0;
    const call = this.callUpstream(account, mint).then((minted) => {
      const entry: Entry = { token: minted.token, expiresAtMs: minted.expiresAtMs, stale: false, account };
      if ((this.epochs.get(account) ?? 0) === epoch) {
        this.entries.delete(key); // re-inserted last: Map order is then oldest-written first
        this.entries.set(key, entry);
        if (this.entries.size > this.o.maxEntries) this.evict();
      }
      return entry;
    });
    const tracked = call.finally(() => {
      if (this.inflight.get(key) === tracked) this.inflight.delete(key);
    });
    this.inflight.set(key, tracked);
    return tracked;
  }

  /** Drops expired entries, then the oldest-written ones, down to the bound. */
  private evict(): void {
    const nowMs = this.o.now();
    for (const [key, entry] of this.entries) if (entry.expiresAtMs <= nowMs) this.entries.delete(key);
    for (const key of this.entries.keys()) {
      if (this.entries.size <= this.o.maxEntries) break;
      this.entries.delete(key);
    }
  }

  private async callUpstream(account: string, mint: (longTermToken: string) => Promise<UpstreamToken>): Promise<UpstreamToken> {
    let credential = this.o.credential(account);
    if (!credential) throw new TrustplaneError("NOT_FOUND", "ACCOUNT_NOT_ON_VM", `service account ${account} is not on this VM`);
    for (let attempt = 0; ; attempt++) {
      this.stats.upstreamCalls++;
      try {
        const minted = await mint(credential);
        this.healthState = { upstreamReachable: true, servingStale: false };
        return minted;
      } catch (error) {
        if (isRefusal(error)) {
          // A rotation landed while this call used the older secret: retry once with the newest.
          const newest = this.o.credential(account);
          if (attempt === 0 && RACE_REASONS.has(error.reason) && newest && newest !== credential) {
            credential = newest;
            continue;
          }
          if (error.status === "UNAUTHENTICATED" || error.reason === "HOST_MISMATCH" || error.reason === "VM_NOT_HOLDER" || error.reason === "ACCOUNT_NOT_FOUND") {
            this.dropAccount(account);
            this.o.onRefused?.(account, error);
          }
          throw error;
        }
        this.healthState = {
          upstreamReachable: false,
          servingStale: this.healthState.servingStale,
          lastUpstreamError: error instanceof TrustplaneError ? error.reason : "UPSTREAM_ERROR",
          lastUpstreamFailureAtMs: this.o.now(),
        };
        throw error instanceof TrustplaneError
          ? error
          : new TrustplaneError("UNAVAILABLE", "AUTHORITY_UNREACHABLE", "the token authority could not be reached; retry shortly");
      }
    }
  }
}

function isRefusal(error: unknown): error is TrustplaneError {
  return error instanceof TrustplaneError && DEFINITIVE.has(error.status);
}
