// Public API of the SDK client: typed signing clients over generated service definitions.
// Implements the SDK side of the architecture's "One signing primitive".
export { createClient, type SignedClient, type SignedMethod, type CreateClientOptions, type CallOpts, type ServerStream, type BidiStream, type ClientStreamInput } from "./create-client.js";
export { createSigningInterceptor, STREAM_DIGEST_OPTION, type SigningInterceptorOptions } from "./signing-interceptor.js";
export { signingServiceDefinition, canonicalSerializer, passesBytes, PASSES_BYTES } from "./signing-service.js";
export { toTrustplaneError } from "./client-error.js";
