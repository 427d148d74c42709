// The token authority's EdDSA (Ed25519) JWT signing key ring: one current key signs, keys
// rotated out stay published in the JWKS until the last token they signed can have expired
// (rotatedAt + max token TTL). Implements "Signing keys rotate; old keys kept" of seed 000.
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from "jose";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

/** One key as persisted. `privateJwk` holds the secret `d`: a real store must encrypt it at rest. */
export interface StoredSigningKey {
  /** RFC 7638 thumbprint of the public JWK. */
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
  createdAtMs: number;
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

export class SigningKeyRing {
  private readonly keys = new Map<string, LoadedKey>();
  private currentKid = "";
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
    const current = [...ring.keys.values()]
      .filter((k) => k.stored.rotatedAtMs === undefined)
      .sort((a, b) => b.stored.createdAtMs - a.stored.createdAtMs || (a.stored.kid < b.stored.kid ? -1 : 1))[0];
    if (current) ring.currentKid = current.stored.kid;
    else await ring.rotate();
    return ring;
  }

  /** The key that signs new tokens. */
  current(): SigningKey {
    const key = this.keys.get(this.currentKid);
    if (!key) throw new TrustplaneError("INTERNAL", "NO_SIGNING_KEY", "the signing key ring has no current key");
    return { kid: key.stored.kid, privateKey: key.privateKey };
  }

  /**
   * Makes a fresh key current. The previous key keeps verifying (stays in the JWKS) until
   * every token it may have signed has expired. Returns the new kid.
   */
  async rotate(): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const privateJwk = await exportJWK(privateKey);
    const kid = await calculateJwkThumbprint(publicJwk, "sha256");
    const nowMs = this.now();
    const stored: StoredSigningKey = { kid, privateJwk, publicJwk, createdAtMs: nowMs };
    // Persist the new key before retiring the old one, so a crash between the two writes
    // leaves two current keys (the newest wins on load) rather than none.
    await this.store.save(stored);
    const previous = this.keys.get(this.currentKid);
    if (previous) {
      previous.stored.rotatedAtMs = nowMs;
      previous.stored.retireAtMs = nowMs + this.maxTokenTtlMs;
      await this.store.save(previous.stored);
    }
    this.keys.set(kid, { stored, privateKey: (await importJWK(privateJwk, "EdDSA")) as CryptoKey });
    this.currentKid = kid;
    await this.prune();
    return kid;
  }

  /**
   * Re-reads the store so replicas sharing it converge: keys another replica created or
   * rotated appear here (and in this replica's JWKS), and the newest unrotated key signs.
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
    const unrotated = [...this.keys.values()]
      .filter((k) => k.stored.rotatedAtMs === undefined)
      .sort((a, b) => b.stored.createdAtMs - a.stored.createdAtMs || (a.stored.kid < b.stored.kid ? -1 : 1));
    const current = unrotated[0];
    if (!current) return;
    this.currentKid = current.stored.kid;
    // Two replicas rotating at once leave two unrotated keys: retire the older ones like a
    // rotation would, so they leave the JWKS once their tokens have expired.
    for (const older of unrotated.slice(1)) {
      older.stored.rotatedAtMs = current.stored.createdAtMs;
      older.stored.retireAtMs = current.stored.createdAtMs + this.maxTokenTtlMs;
      await this.store.save(older.stored);
    }
  }

  /** When the key that signs now was created (for scheduled rotation). */
  currentCreatedAtMs(): number {
    return this.keys.get(this.currentKid)?.stored.createdAtMs ?? 0;
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
