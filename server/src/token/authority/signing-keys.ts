// The token authority's EdDSA (Ed25519) JWT signing key ring: one current key signs, the next
// one is announced (published in the JWKS) before it signs, so every replica and every cached
// JWKS knows it first; keys rotated out stay published until the last token they signed can
// have expired (rotatedAt + max token TTL). Implements "Signing keys rotate; old keys kept".
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

/** One key as persisted. `privateJwk` holds the secret `d`: a real store must encrypt it at rest. */
export interface StoredSigningKey {
  /** RFC 7638 thumbprint of the public JWK. */
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
  createdAtMs: number;
  /** When the key starts signing (absent: at createdAtMs); published in the JWKS before that. */
  activatesAtMs?: number;
  /** Set when the key stopped being current; it keeps verifying until `retireAtMs`. */
  rotatedAtMs?: number;
  /** When the key leaves the JWKS: rotatedAtMs + the longest token lifetime. */
  retireAtMs?: number;
}

/** Persistence hook so the lead can back the ring with the storage layer (SQLite/PostgreSQL). */
export interface SigningKeyStore {
  load(): Promise<StoredSigningKey[]>;
  save(key: StoredSigningKey): Promise<void>;
  remove(kid: string): Promise<void>;
}

export class InMemorySigningKeyStore implements SigningKeyStore {
  private readonly keys = new Map<string, StoredSigningKey>();

  async load(): Promise<StoredSigningKey[]> {
    return [...this.keys.values()].map((k) => structuredClone(k));
  }

  async save(key: StoredSigningKey): Promise<void> {
    this.keys.set(key.kid, structuredClone(key));
  }

  async remove(kid: string): Promise<void> {
    this.keys.delete(kid);
  }
}

/** A public key as published at /.well-known/jwks.json. */
export interface PublicSigningJwk extends JWK {
  kid: string;
  alg: "EdDSA";
  use: "sig";
}

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
}

export interface SigningKeyRingOptions {
  store: SigningKeyStore;
  /** Longest lifetime of any token this ring signs; rotated keys stay published this long. */
  maxTokenTtlSeconds: number;
  now?: () => number;
}

interface LoadedKey {
  stored: StoredSigningKey;
  privateKey: CryptoKey;
}

const activation = (k: StoredSigningKey) => k.activatesAtMs ?? k.createdAtMs;

export class SigningKeyRing {
  private readonly keys = new Map<string, LoadedKey>();
  private currentKid = "";
  /** When an announced key starts signing (Infinity: none announced). */
  private switchAtMs = Infinity;
  private readonly now: () => number;

  private constructor(
    private readonly store: SigningKeyStore,
    private readonly maxTokenTtlMs: number,
    now: () => number,
  ) {
    this.now = now;
  }

  /** Loads the persisted keys; generates the first key when the store is empty. */
  static async open(options: SigningKeyRingOptions): Promise<SigningKeyRing> {
    if (!Number.isInteger(options.maxTokenTtlSeconds) || options.maxTokenTtlSeconds <= 0) {
      throw new TrustplaneError(
        "INVALID_ARGUMENT",
        "INVALID_MAX_TOKEN_TTL",
        "maxTokenTtlSeconds must be a positive whole number of seconds",
        "maxTokenTtlSeconds",
      );
    }
    const ring = new SigningKeyRing(options.store, options.maxTokenTtlSeconds * 1000, options.now ?? Date.now);
    for (const stored of await options.store.load()) {
      const privateKey = (await importJWK(stored.privateJwk, "EdDSA")) as CryptoKey;
      ring.keys.set(stored.kid, { stored, privateKey });
    }
    ring.elect();
    // Nothing can have published a key yet, so the very first one signs at once.
    if (!ring.currentKid) await ring.rotate();
    return ring;
  }

  /** The key that signs new tokens. */
  current(): SigningKey {
    if (this.now() >= this.switchAtMs) this.elect();
    const key = this.keys.get(this.currentKid);
    if (!key) throw new TrustplaneError("INTERNAL", "NO_SIGNING_KEY", "the signing key ring has no current key");
    return { kid: key.stored.kid, privateKey: key.privateKey };
  }

  /**
   * Publishes a fresh key that starts signing `leadMs` from now. Until then it is only in the
   * JWKS, so replicas (which pick it up on their next refresh) and resource servers (which
   * cache the JWKS) know it before the first token it signs. Returns the new kid.
   */
  async announce(leadMs: number): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const privateJwk = await exportJWK(privateKey);
    const kid = await calculateJwkThumbprint(publicJwk, "sha256");
    const nowMs = this.now();
    const stored: StoredSigningKey = { kid, privateJwk, publicJwk, createdAtMs: nowMs, activatesAtMs: nowMs + Math.max(0, leadMs) };
    // Persisted before it is used anywhere, so a crash leaves it announced rather than lost.
    await this.store.save(stored);
    this.keys.set(kid, { stored, privateKey: (await importJWK(privateJwk, "EdDSA")) as CryptoKey });
    await this.persistRetirements(this.elect());
    return kid;
  }

  /**
   * Makes a fresh key current now (the first key; an emergency after a suspected leak, when
   * waiting for the announcement is worse than a verifier briefly missing the key).
   */
  async rotate(): Promise<string> {
    const kid = await this.announce(0);
    await this.prune();
    return kid;
  }

  /** The announced key that has not started signing yet, if any. */
  pending(): { kid: string; activatesAtMs: number } | undefined {
    const nowMs = this.now();
    let next: StoredSigningKey | undefined;
    for (const { stored } of this.keys.values()) {
      if (stored.rotatedAtMs === undefined && activation(stored) > nowMs && (!next || activation(stored) < activation(next))) next = stored;
    }
    return next && { kid: next.kid, activatesAtMs: activation(next) };
  }

  /**
   * Re-reads the store so replicas sharing it converge: keys another replica created,
   * announced or rotated appear here (and in this replica's JWKS), and the same key signs.
   */
  async refresh(): Promise<void> {
    const stored = await this.store.load();
    const seen = new Set<string>();
    for (const s of stored) {
      seen.add(s.kid);
      const known = this.keys.get(s.kid);
      if (known) {
        known.stored.rotatedAtMs = s.rotatedAtMs;
        known.stored.retireAtMs = s.retireAtMs;
      } else {
        this.keys.set(s.kid, { stored: s, privateKey: (await importJWK(s.privateJwk, "EdDSA")) as CryptoKey });
      }
    }
    // Keys pruned by another replica are gone for good.
    for (const kid of [...this.keys.keys()]) if (!seen.has(kid)) this.keys.delete(kid);
    await this.persistRetirements(this.elect());
  }

  /** When the key that signs now started signing (for scheduled rotation). */
  currentActivatedAtMs(): number {
    const k = this.keys.get(this.currentKid)?.stored;
    return k ? activation(k) : 0;
  }

  /**
   * Picks the signing key: among unrotated keys already active, the latest to activate. Older
   * active ones (superseded by an announced key coming due, or two replicas rotating at once)
   * retire as a rotation would: they stay in the JWKS until their tokens have expired.
   * Returns the keys it retired, for the caller to persist.
   */
  private elect(): StoredSigningKey[] {
    const nowMs = this.now();
    const active: StoredSigningKey[] = [];
    let switchAt = Infinity;
    for (const { stored } of this.keys.values()) {
      if (stored.rotatedAtMs !== undefined) continue;
      if (activation(stored) <= nowMs) active.push(stored);
      else switchAt = Math.min(switchAt, activation(stored));
    }
    active.sort((a, b) => activation(b) - activation(a) || b.createdAtMs - a.createdAtMs || (a.kid < b.kid ? -1 : 1));
    this.switchAtMs = switchAt;
    const current = active[0];
    if (!current) return [];
    this.currentKid = current.kid;
    for (const older of active.slice(1)) {
      older.rotatedAtMs = activation(current);
      older.retireAtMs = activation(current) + this.maxTokenTtlMs;
    }
    return active.slice(1);
  }

  private async persistRetirements(retired: StoredSigningKey[]): Promise<void> {
    for (const k of retired) await this.store.save(k);
  }

  /** Drops keys whose last token has expired; returns the kids removed. */
  async prune(): Promise<string[]> {
    const nowMs = this.now();
    const removed: string[] = [];
    for (const [kid, key] of this.keys) {
      if (key.stored.retireAtMs !== undefined && key.stored.retireAtMs <= nowMs) {
        this.keys.delete(kid);
        await this.store.remove(kid);
        removed.push(kid);
      }
    }
    return removed;
  }

  /** The public JWK Set: the current key and every rotated key not yet retired. */
  jwks(): { keys: PublicSigningJwk[] } {
    const nowMs = this.now();
    const keys: PublicSigningJwk[] = [];
    for (const { stored } of this.keys.values()) {
      if (stored.retireAtMs !== undefined && stored.retireAtMs <= nowMs) continue;
      const { kty, crv, x } = stored.publicJwk;
      keys.push({ kty, crv, x, kid: stored.kid, alg: "EdDSA", use: "sig" });
    }
    return { keys };
  }
}
