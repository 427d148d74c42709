// Verifies the user's own signed VM create request before a long-term token is issued (seed
// 000: "no trust between the VM manager and the authority"): the envelope must verify against
// a registered, unrevoked key of the user, carry a CreateVmRequest that names the account and
// (a superset of) the scopes, come from a user on the account's ACL, and not be a replay.
import { createHash, timingSafeEqual } from "node:crypto";
import { importVerificationKey } from "../../../../sdk/src/auth/index.js";
import { verifyEnvelope, type SignedEnvelope } from "../../../../sdk/src/auth/envelope.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { CALL_STATEMENT_TYPE } from "../../../../sdk/src/auth/pae.js";
import { CallStatement } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { CreateVmRequest, SetVmServiceAccountsRequest, type ServiceAccountGrant } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { VM_CREATE_PAYLOAD_TYPE } from "../../../../sdk/src/token/vm-create-envelope.js";
import { SERVER_PRINCIPAL } from "../../processes/server-keys.js";
import type { KeyRepository } from "../../runtime/storage/key-repository.js";
import type { ServiceAccountRegistry } from "./service-accounts.js";

const CREATE_VM_METHOD = "/trustplane.vm.v1.VmService/CreateVm";
const SET_ACCOUNTS_METHOD = "/trustplane.vm.v1.VmService/SetVmServiceAccounts";
/** A forwarded user call vouches only while fresh (VM creation is not a long-running wait). */
export const MAX_FORWARDED_CALL_AGE_MS = 15 * 60_000;

function timingSafeEqualBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

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

  /**
   * Verifies the user's proof and authorises (user, account, scopes, VM); records the use.
   * The proof is either a vm-create envelope, or the user's own signed CreateVm /
   * SetVmServiceAccounts call forwarded by the VM manager: its call statement as an envelope
   * (payload type call-statement, the user's call signature) plus the request's wire bytes,
   * which must hash to the statement's request_digest.
   */
  async check(
    envelope: SignedEnvelope | undefined,
    want: { serviceAccount: string; scopes: readonly string[]; vmId: string },
    requestBody?: Uint8Array,
  ): Promise<VerifiedCreateRequest> {
    if (!envelope || envelope.signatures.length === 0) {
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MISSING", "user_request must carry the user's signed VM create request", "user_request");
    }
    const isCall = envelope.payloadType === CALL_STATEMENT_TYPE;
    let principal = "";
    const verified = await verifyEnvelope(envelope, {
      expectedType: isCall ? CALL_STATEMENT_TYPE : VM_CREATE_PAYLOAD_TYPE,
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
    const grants = isCall ? this.grantsFromCall(verified.payload, requestBody, want.vmId) : this.grantsFromCreate(verified.payload);
    const request = grants.request;
    const grant = grants.serviceAccounts.find((g) => g.email === want.serviceAccount);
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

  private grantsFromCreate(payload: Uint8Array): { request: CreateVmRequest; serviceAccounts: ServiceAccountGrant[] } {
    try {
      const request = CreateVmRequest.decode(payload);
      return { request, serviceAccounts: request.serviceAccounts };
    } catch {
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MALFORMED", "user_request does not hold a trustplane.vm.v1.CreateVmRequest", "user_request");
    }
  }

  private grantsFromCall(payload: Uint8Array, body: Uint8Array | undefined, vmId: string): { request: CreateVmRequest; serviceAccounts: ServiceAccountGrant[] } {
    let statement: CallStatement;
    try {
      statement = CallStatement.decode(payload);
    } catch {
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MALFORMED", "user_request does not hold a call statement", "user_request");
    }
    if (!body || body.length === 0) throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MALFORMED", "a forwarded call needs user_request_body", "user_request_body");
    if (!timingSafeEqualBytes(createHash("sha256").update(body).digest(), statement.requestDigest)) {
      throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_MISMATCH", "user_request_body is not the request the user signed", "user_request_body");
    }
    const age = (this.o.now ?? Date.now)() - statement.timestampMs;
    if (age > MAX_FORWARDED_CALL_AGE_MS || age < -MAX_FORWARDED_CALL_AGE_MS) {
      throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_STALE", "the forwarded user call is too old to vouch for a new long-term token", "user_request");
    }
    try {
      if (statement.method === CREATE_VM_METHOD) {
        const request = CreateVmRequest.decode(body);
        return { request, serviceAccounts: request.serviceAccounts };
      }
      if (statement.method === SET_ACCOUNTS_METHOD) {
        const change = SetVmServiceAccountsRequest.decode(body);
        // A change names its VM: it vouches for that VM only.
        if (change.vmId !== vmId) throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_MISMATCH", `the user's request changes VM ${change.vmId}, not ${vmId}`, "vm_id");
        return { request: CreateVmRequest.fromPartial({ requestId: change.requestId, serviceAccounts: change.serviceAccounts }), serviceAccounts: change.serviceAccounts };
      }
    } catch (e) {
      if (e instanceof TrustplaneError) throw e;
      throw new TrustplaneError("INVALID_ARGUMENT", "USER_REQUEST_MALFORMED", `user_request_body does not decode as the request of ${statement.method}`, "user_request_body");
    }
    throw new TrustplaneError("PERMISSION_DENIED", "USER_REQUEST_MISMATCH", `a ${statement.method} call does not ask for a VM's service accounts`, "user_request");
  }
}
