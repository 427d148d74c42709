// Resolves call-signing keys from storage for the server's call verifier, with a short-lived
// cache so signed calls stay near unsigned speed. Revocation on this replica invalidates at
// once; other replicas see it within the TTL (default 2 s).
import { importVerificationKey, type VerificationKey } from "../../../sdk/src/auth/index.js";
import type { KeyResolver } from "../runtime/auth/key-resolver.js";
import type { Storage } from "../runtime/storage/storage.js";

type Resolved = { principal: string; key: VerificationKey; revoked: boolean; roles: string[] };

export class KeyCache implements KeyResolver {
  private readonly entries = new Map<string, { value: Resolved | undefined; until: number }>();

  constructor(
    private readonly storage: Storage,
    private readonly ttlMs = 2000,
    private readonly now: () => number = Date.now,
  ) {}

  async resolve(keyId: string): Promise<Resolved | undefined> {
    const hit = this.entries.get(keyId);
    if (hit && hit.until > this.now()) return hit.value;
    const rec = await this.storage.keys.get(keyId);
    let value: Resolved | undefined;
    if (rec) {
      const principal = await this.storage.principals.get(rec.principal);
      value = { principal: rec.principal, key: importVerificationKey(rec.jwk), revoked: rec.revokedAtMs != null, roles: principal?.roles ?? [] };
    }
    if (this.entries.size > 10_000) this.entries.clear();
    this.entries.set(keyId, { value, until: this.now() + this.ttlMs });
    return value;
  }

  invalidate(keyId?: string): void {
    if (keyId === undefined) this.entries.clear();
    else this.entries.delete(keyId);
  }
}
