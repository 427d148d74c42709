// Public SDK surface of the privileged-operations area.
export * from "./payload-types.js";
export * from "./privileged-request.js";
export * from "./open-result.js";
export * from "./open-result-stream.js";
export * from "./operations.js";
export * from "./certificate-options.js";
export * from "./host-key-trust.js";
