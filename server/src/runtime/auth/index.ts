// Server side of the signing primitive: the call verifier, the service binder that runs it on
// raw request bytes for every service, and the stores and policy engine it relies on.
export { CallVerifier, CallRejectedError, type CallVerifierOptions } from "./call-verifier.js";
export type { Caller } from "./caller.js";
export type { KeyResolver, ResolvedKey } from "./key-resolver.js";
export type { NonceStore } from "./nonce-store.js";
export { MemoryNonceStore, type MemoryNonceStoreOptions } from "./memory-nonce-store.js";
export { RulePolicyEngine, methodMatches, ADMIN_ROLE, type PolicyEngine, type PrincipalPolicy, type PolicyRuleSpec } from "./policy-engine.js";
export { MemoryIdempotencyStore, type IdempotencyStore, type IdempotencyRecord } from "./idempotency-store.js";
export {
  bindService,
  areaOf,
  type BindRuntime,
  type CallContext,
  type DeniedCall,
  type Handlers,
  type HandlerFor,
  type MethodDef,
  type RequestOf,
  type ResponseOf,
} from "./service-binder.js";
export { toServiceError, REASON_METADATA, FIELD_METADATA } from "./error-status.js";
