// Principals as the call verifier's policy check reads them on every call, with a short-lived
// cache (as KeyCache does for keys) so a signed call costs no database round trip for its
// policy. A change on this replica invalidates at once; other replicas see it within the TTL.
import type { PrincipalRecord } from "../runtime/storage/principal-repository.js";
import type { Storage } from "../runtime/storage/storage.js";

export class PrincipalCache {
  private readonly entries = new Map<string, { value: PrincipalRecord | undefined; until: number }>();

  constructor(
    private readonly storage: Storage,
    private readonly ttlMs = 2000,
    private readonly now: () => number = Date.now,
  ) {}

  async get(name: string): Promise<PrincipalRecord | undefined> {
    const hit = this.entries.get(name);
    if (hit && hit.until > this.now()) return hit.value;
    const value = await this.storage.principals.get(name);
    if (this.entries.size > 10_000) this.entries.clear();
    this.entries.set(name, { value, until: this.now() + this.ttlMs });
    return value;
  }

  invalidate(name?: string): void {
    if (name === undefined) this.entries.clear();
    else this.entries.delete(name);
  }
}
