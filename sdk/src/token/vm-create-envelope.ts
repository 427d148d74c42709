// The user's own signed VM create request (seed 000): a portable SignedEnvelope over a
// trustplane.vm.v1.CreateVmRequest. The token authority issues a long-term token for a VM's
// service account only with this as proof that a user on the account's ACL asked for the VM.
import { signEnvelope, type EnvelopeSigner, type SignedEnvelope } from "../auth/envelope.js";
import type { DeepPartial } from "../client/create-client.js";
import { CreateVmRequest } from "../gen/trustplane/vm/v1/vm.js";

export const VM_CREATE_PAYLOAD_TYPE = "application/vnd.trustplane.vm-create+proto";

/** Encodes the create request and signs it with the user's key(s). */
export function signVmCreateRequest(request: DeepPartial<CreateVmRequest>, signers: EnvelopeSigner[]): SignedEnvelope {
  // fromPartial fills defaults; the cast only bridges two equivalent DeepPartial definitions.
  const message = CreateVmRequest.fromPartial(request as CreateVmRequest);
  return signEnvelope(VM_CREATE_PAYLOAD_TYPE, CreateVmRequest.encode(message).finish(), signers);
}
