// Mint sessions for hosts (seed 000's minting at the authority): after one call signed with its
// Ed25519 host key, an agent gets an HMAC-SHA256 call-signing key, registered for its host
// principal, sealed to its X25519 key so no one else can use it, and revoked when it expires.
// Verifying an HMAC costs microseconds where an Ed25519 verify costs a whole unsigned call.
import { randomBytes } from "node:crypto";
import { importSigningKey } from "../../../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { Storage } from "../../runtime/storage/storage.js";
import type { HostTokenSealer } from "./host-token-sealer.js";

export interface HostSessionsOptions {
  storage: Pick<Storage, "keys" | "hosts">;
  sealer: HostTokenSealer;
  /** Lifetime of a session key. Default 1 h. */
  ttlMs?: number;
  now?: () => number;
}

export interface OpenedHostSession {
  keyId: string;
  /** The oct JWK, sealed to the host ("host session" purpose). */
  sealedKey: string;
  expiresAtMs: number;
}

export class HostSessions {
  readonly ttlMs: number;
  private readonly now: () => number;

  constructor(private readonly o: HostSessionsOptions) {
    this.ttlMs = o.ttlMs ?? 3600_000;
    this.now = o.now ?? Date.now;
  }

  /**
   * Opens a session for `hostId`, whose agent made this call with `callerKeyId`. A session key
   * cannot open another one, so a key that leaks from an agent's memory dies with its session.
   * Sessions of the host older than its newest previous one are revoked: one agent needs the
   * current key and, across a handover, the one before it.
   */
  async open(hostId: string, callerKeyId: string): Promise<OpenedHostSession> {
    const principal = `host:${hostId}`;
    const caller = await this.o.storage.keys.get(callerKeyId);
    if (caller?.algorithm === "HS256") {
      throw new TrustplaneError("PERMISSION_DENIED", "SESSION_KEY_CANNOT_OPEN_SESSION", "open a host session with the host's own key, not with a session key", "host_id");
    }
    const nowMs = this.now();
    const key = importSigningKey({ kty: "oct", k: randomBytes(32).toString("base64url") });
    const jwk = JSON.stringify(key.publicJwk);
    // Sealed before it is registered: a key no host can open is never valid anywhere.
    const sealedKey = await this.o.sealer.seal(hostId, jwk, "host session");
    await this.o.storage.keys.add({ keyId: key.keyId, principal, algorithm: "HS256", jwk, createdAtMs: nowMs });
    const live = (await this.o.storage.keys.listFor(principal)).filter((k) => k.algorithm === "HS256" && k.revokedAtMs == null && k.keyId !== key.keyId);
    live.sort((a, b) => b.createdAtMs - a.createdAtMs);
    for (const old of live.slice(1)) await this.o.storage.keys.revoke(old.keyId, nowMs);
    return { keyId: key.keyId, sealedKey, expiresAtMs: nowMs + this.ttlMs };
  }

  /** Revokes every host session key past its lifetime; returns their key ids. */
  async expire(): Promise<string[]> {
    const nowMs = this.now();
    const revoked: string[] = [];
    for (const host of await this.o.storage.hosts.list()) {
      for (const k of await this.o.storage.keys.listFor(`host:${host.hostId}`)) {
        if (k.algorithm !== "HS256" || k.revokedAtMs != null || k.createdAtMs + this.ttlMs > nowMs) continue;
        await this.o.storage.keys.revoke(k.keyId, nowMs);
        revoked.push(k.keyId);
      }
    }
    return revoked;
  }
}
