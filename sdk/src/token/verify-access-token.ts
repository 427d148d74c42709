// Resource-server side of seed 000: verify a Trustplane access token against the authority's
// JWKS URL with jose's remote key set (cached, refetched on an unknown kid), pinning EdDSA,
// the at+jwt type, issuer, audience, lifetime and the scopes the resource needs.
import { createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from "jose";
import { TrustplaneError } from "../errors.js";

export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  scope: string;
  iat: number;
  exp: number;
  jti: string;
  tp_vm: string;
  tp_host: string;
}

export interface VerifyAccessTokenOptions {
  jwksUrl: string;
  issuer: string;
  audience: string;
  requiredScopes?: readonly string[];
  clockToleranceSeconds?: number;
  /** The time to verify at (default now): lets a resource server check a token's expiry ahead. */
  currentDate?: Date;
}

// One remote key set per URL, so its cache survives across calls.
const keySets = new Map<string, JWTVerifyGetKey>();

function keySet(url: string): JWTVerifyGetKey {
  let set = keySets.get(url);
  if (!set) {
    set = createRemoteJWKSet(new URL(url), { cacheMaxAge: 300_000, cooldownDuration: 5_000 });
    keySets.set(url, set);
  }
  return set;
}

/** Throws UNAUTHENTICATED for a bad/expired/forged token, PERMISSION_DENIED for missing scopes. */
export async function verifyAccessToken(jwt: string, options: VerifyAccessTokenOptions): Promise<AccessTokenClaims> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(jwt, keySet(options.jwksUrl), {
      algorithms: ["EdDSA"],
      typ: "at+jwt",
      issuer: options.issuer,
      audience: options.audience,
      requiredClaims: ["exp", "iat", "jti", "sub", "scope"],
      clockTolerance: options.clockToleranceSeconds ?? 5,
      maxTokenAge: 3600 + (options.clockToleranceSeconds ?? 5),
      currentDate: options.currentDate,
    }));
  } catch (e) {
    const reason = e instanceof errors.JWTExpired ? "TOKEN_EXPIRED" : e instanceof errors.JWTClaimValidationFailed ? "TOKEN_CLAIM_INVALID" : "TOKEN_INVALID";
    throw new TrustplaneError("UNAUTHENTICATED", reason, `access token refused: ${(e as Error).message}`);
  }
  if (typeof payload.scope !== "string") throw new TrustplaneError("UNAUTHENTICATED", "TOKEN_CLAIM_INVALID", "access token refused: scope is not a string");
  const granted = new Set(payload.scope.split(" "));
  const missing = (options.requiredScopes ?? []).filter((s) => !granted.has(s));
  if (missing.length > 0) throw new TrustplaneError("PERMISSION_DENIED", "INSUFFICIENT_SCOPE", `token lacks scope(s): ${missing.join(" ")}`);
  return payload as unknown as AccessTokenClaims;
}
