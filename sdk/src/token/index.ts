// Public surface of the token area's SDK: sign a user's VM create request (the proof the
// token authority needs) and verify access tokens at a resource server.
export { VM_CREATE_PAYLOAD_TYPE, signVmCreateRequest } from "./vm-create-envelope.js";
export { verifyAccessToken, type AccessTokenClaims, type VerifyAccessTokenOptions } from "./verify-access-token.js";
