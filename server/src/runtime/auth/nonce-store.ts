// Replay protection: every call nonce is remembered until its statement can no longer pass
// the timestamp skew check. Implements "nonce unseen within that window".

export interface NonceStore {
  /** Records the nonce; resolves false when it was already recorded and has not expired. */
  remember(nonce: Uint8Array, expiresAtMs: number): Promise<boolean>;
}
