// Proof that a joining host holds the private half of the signing key it registers: its
// JoinHost call must be signed by that very key (it has no registered key yet, so the method
// is public to the binder and verified here with the same CallVerifier checks).
import type * as grpc from "@grpc/grpc-js";
import { canonicalEncode, type VerificationKey } from "../../../sdk/src/auth/index.js";
import { JoinHostRequest } from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { CallVerifier } from "../runtime/auth/call-verifier.js";
import type { NonceStore } from "../runtime/auth/nonce-store.js";

export async function verifyProofOfPossession(input: {
  key: VerificationKey;
  method: string;
  metadata: grpc.Metadata;
  request: JoinHostRequest;
  nonces: NonceStore;
  skewMs: number;
  nowMs: number;
}): Promise<void> {
  const verifier = new CallVerifier({
    keys: { resolve: async (keyId) => (keyId === input.key.keyId ? { principal: "joining-host", key: input.key, revoked: false, roles: [] } : undefined) },
    caKeys: () => [],
    nonces: input.nonces,
    policy: { authorize: async () => true },
    skewMs: input.skewMs,
    now: () => input.nowMs,
  });
  // The SDK sends canonical bytes, so re-encoding the decoded request reproduces them; any
  // unknown or non-canonical content changes the digest and fails, never the other way round.
  await verifier.verify(input.method, input.metadata, canonicalEncode(JoinHostRequest, input.request));
}
