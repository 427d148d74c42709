// Where the call verifier looks up signing keys (the storage layer implements it).
// Implements "known key" of the architecture's server checks.
import type { VerificationKey } from "../../../../sdk/src/auth/verification-key.js";

export interface ResolvedKey {
  principal: string;
  key: VerificationKey;
  revoked: boolean;
  roles?: string[];
}

export interface KeyResolver {
  resolve(keyId: string): Promise<ResolvedKey | undefined>;
}
