// The Trustplane SDK's root entry point (`@trustplane/sdk`): the signing primitive, signed
// clients and the error type at the top level, and each area under its own name. Every area
// is also a subpath of its own (`@trustplane/sdk/job`, `/envelope`, `/privileged`, `/token`,
// `/auth`, `/client`, `/errors`, and `/gen/*` for generated messages and services).
export * from "./auth/index.js";
export * from "./client/index.js";
export * from "./errors.js";
export * as envelope from "./envelope/index.js";
export * as job from "./job/index.js";
export * as privileged from "./privileged/index.js";
export * as token from "./token/index.js";
