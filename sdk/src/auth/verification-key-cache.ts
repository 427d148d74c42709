// A bounded cache of imported verification keys keyed by their JWK text, so a key resolver
// backed by storage does not rebuild a node:crypto KeyObject on every call. Caches only the
// import (a pure function of the JWK); whether a key is revoked must still come from storage.
import type { JsonWebKey } from "node:crypto";
import { importVerificationKey, type VerificationKey } from "./verification-key.js";

export class VerificationKeyCache {
  private readonly entries = new Map<string, VerificationKey>();

  constructor(private readonly maxEntries = 10_000) {}

  get(jwk: string | JsonWebKey): VerificationKey {
    const text = typeof jwk === "string" ? jwk : JSON.stringify(jwk);
    const hit = this.entries.get(text);
    if (hit) {
      // Refresh recency: Map iteration order is insertion order, so re-insert at the end.
      this.entries.delete(text);
      this.entries.set(text, hit);
      return hit;
    }
    const key = importVerificationKey(text);
    this.entries.set(text, key);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    return key;
  }

  get size(): number {
    return this.entries.size;
  }
}
