// Verifies the user's own signed VM create request before a long-term token is issued (seed
// 000: "no trust between the VM manager and the authority"): the envelope must verify against
// a registered, unrevoked key of the user, carry a CreateVmRequest that names the account and
// (a superset of) the scopes, come from a user on the account's ACL, and not be a replay.
import { createHash } from "node:crypto";
import { importVerificationKey } from "../../../../sdk/src/auth/index.js";
import { verifyEnvelope, type SignedEnvelope } from "../../../../sdk/src/auth/envelope.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { CreateVmRequest } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { VM_CREATE_PAYLOAD_TYPE } from "../../../../sdk/src/token/vm-create-envelope.js";
import { SERVER_PRINCIPAL } from "../../processes/server-keys.js";
import type { KeyRepository } from "../../runtime/storage/key-repository.js";
import type { ServiceAccountRegistry } from "./service-accounts.js";

export interface VerifiedCreateRequest {
  /** The user who signed (the principal owning the key). */
  principal: string;
  keyId: string;
  request: CreateVmRequest;
  /** hex SHA-256 over payload type and payload: what replays are recognised by. */
  digest: string;
}

export interface UsedRequestLedger {
  markRequestUsed(use: { digest: string; serviceAccount: string; vmId: string; principal: string }, nowMs: number): Promise<boolean>;
}

export interface UserCreateRequestCheckOptions {
  keys: Pick<KeyRepository, "get">;
  accounts: ServiceAccountRegistry;
  ledger: UsedRequestLedger;
  now?: () => number;
}

export class UserCreateRequestCheck {
  constructor(private readonly o: UserCreateRequestCheckOptions) {}

  /** Verifies the envelope and authorises (user, account, scopes, VM); records the use. */
  async check(envelope: SignedEnvelope | undefined, want: { serviceAccount: string; scopes: readonly string[]; vmId: string }): Promise<VerifiedCreateRequest> {
    if (!envelope || envelope.signatures.length === 0) {
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MISSING", "user_request must carry the user's signed VM create request", "user_request");
    }
    let principal = "";
    const verified = await verifyEnvelope(envelope, {
      expectedType: VM_CREATE_PAYLOAD_TYPE,
      resolveKey: async (keyId) => {
        const rec = await this.o.keys.get(keyId);
        // Only registered, unrevoked keys vouch for a user. Host keys and the server's own key
        // are not users: the VM manager must not be able to stand in for the user.
        if (!rec || rec.revokedAtMs != null || rec.principal.startsWith("host:") || rec.principal === SERVER_PRINCIPAL) return undefined;
        principal = rec.principal;
        return importVerificationKey(rec.jwk);
      },
    });
    const owner = await this.o.keys.get(verified.keyId);
    principal = owner?.principal ?? principal;
    let request: CreateVmRequest;
    try {
      request = CreateVmRequest.decode(verified.payload);
    } catch {
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MALFORMED", "user_request does not hold a trustplane.vm.v1.CreateVmRequest", "user_request");
    }
    const grant = request.serviceAccounts.find((g) => g.email === want.serviceAccount);
    if (!grant) {
      throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_MISMATCH", `the user's create request does not ask for service account ${want.serviceAccount}`, "user_request");
    }
    const extra = want.scopes.filter((s) => !grant.scopes.includes(s));
    if (extra.length > 0) {
      throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_MISMATCH", `the user's create request does not ask for scope(s) ${extra.join(", ")}`, "scopes");
    }
    await this.o.accounts.requireActAs(principal, want.serviceAccount);
    const digest = createHash("sha256").update(envelope.payloadType, "utf8").update("\0").update(envelope.payload).digest("hex");
    const fresh = await this.o.ledger.markRequestUsed({ digest, serviceAccount: want.serviceAccount, vmId: want.vmId, principal }, (this.o.now ?? Date.now)());
    if (!fresh) {
      throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_REPLAYED", "this signed create request was already used; each VM needs the user's own fresh request", "user_request");
    }
    return { principal, keyId: verified.keyId, request, digest };
  }
}
