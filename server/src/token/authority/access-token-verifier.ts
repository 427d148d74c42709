// How a resource server checks our short-term tokens against the authority's JWKS (seed 000:
// "any resource server verifies them with a standard JOSE library"): pinned alg, token type,
// issuer, audience, lifetime and scopes. Pass jose's createRemoteJWKSet(...) as `keys`.
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { ACCESS_TOKEN_TYP, IDENTITY_TOKEN_TYP, MAX_SHORT_TERM_TTL_SECONDS, type AccessTokenClaims } from "./access-token-minter.js";

export interface TokenVerifierOptions {
  keys: JWTVerifyGetKey;
  issuer: string;
  /** The audience this resource server answers to. */
  audience: string;
  clockToleranceSeconds?: number;
  /** Reads the current time; tests move it. */
  currentDate?: () => Date;
}

/** Verifies an access token and that it grants every scope in `requiredScopes`. */
export async function verifyAccessToken(
  jwt: string,
  options: TokenVerifierOptions,
  requiredScopes: readonly string[] = [],
): Promise<AccessTokenClaims> {
  const payload = await verify(jwt, options, ACCESS_TOKEN_TYP, ["exp", "iat", "jti", "sub", "scope", "tp_vm", "tp_host"]);
  if (typeof payload.scope !== "string") throw claimInvalid("scope is not a string");
  const granted = new Set(payload.scope.split(" "));
  const missing = requiredScopes.filter((s) => !granted.has(s));
  if (missing.length > 0) {
    throw new TrustplaneError("PERMISSION_DENIED", "INSUFFICIENT_SCOPE", `token lacks scope(s): ${missing.join(" ")}`);
  }
  return payload as unknown as AccessTokenClaims;
}

/** Verifies an identity token minted for `options.audience`. */
export async function verifyIdentityToken(jwt: string, options: TokenVerifierOptions): Promise<JWTPayload & { email: string }> {
  const payload = await verify(jwt, options, IDENTITY_TOKEN_TYP, ["exp", "iat", "sub", "email"]);
  if (typeof payload.email !== "string") throw claimInvalid("email is not a string");
  return payload as JWTPayload & { email: string };
}

async function verify(jwt: string, options: TokenVerifierOptions, typ: string, requiredClaims: string[]): Promise<JWTPayload> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(jwt, options.keys, {
      algorithms: ["EdDSA"],
      typ,
      issuer: options.issuer,
      audience: options.audience,
      requiredClaims,
      clockTolerance: options.clockToleranceSeconds ?? 30,
      currentDate: options.currentDate?.(),
    }));
  } catch (e) {
    throw mapJoseError(e);
  }
  // A token claiming a longer life than the design allows was not minted by our authority.
  if (payload.exp! - payload.iat! > MAX_SHORT_TERM_TTL_SECONDS) throw claimInvalid("lifetime exceeds one hour");
  return payload;
}

function claimInvalid(message: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", "TOKEN_CLAIM_INVALID", `token rejected: ${message}`);
}

function mapJoseError(e: unknown): TrustplaneError {
  if (e instanceof errors.JWTExpired) {
    return new TrustplaneError("UNAUTHENTICATED", "TOKEN_EXPIRED", "token expired; fetch a new one from the metadata server");
  }
  if (e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWKSNoMatchingKey) {
    return new TrustplaneError("UNAUTHENTICATED", "TOKEN_SIGNATURE_INVALID", "token signature does not verify against the authority's keys");
  }
  if (e instanceof errors.JWTClaimValidationFailed) return claimInvalid(`${e.claim} ${e.reason}`);
  if (e instanceof errors.JOSEAlgNotAllowed) return claimInvalid("algorithm not allowed");
  if (e instanceof errors.JOSEError) return new TrustplaneError("UNAUTHENTICATED", "TOKEN_MALFORMED", `token rejected: ${e.code}`);
  if (e instanceof TrustplaneError) return e;
  return new TrustplaneError("UNAVAILABLE", "JWKS_UNAVAILABLE", "could not fetch the authority's keys");
}
