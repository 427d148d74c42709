// The SDK's resource-server helper against a real JWKS URL: a valid token passes; expired,
// forged (unknown key), wrong issuer/audience, identity-typed and under-scoped tokens fail
// with the documented status and reason.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { verifyAccessToken } from "../../sdk/src/token/index.js";
import { AccessTokenMinter } from "../../server/src/token/authority/access-token-minter.js";
import { createJwksHandler } from "../../server/src/token/authority/jwks-http-handler.js";
import { InMemorySigningKeyStore, SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";

const ISSUER = "https://tokens.sdk.test";
const AUD = "https://files.sdk.test";
let server: http.Server;
let jwksUrl = "";
let keys: SigningKeyRing;
let other: SigningKeyRing;

beforeAll(async () => {
  keys = await SigningKeyRing.open({ store: new InMemorySigningKeyStore(), maxTokenTtlSeconds: 3600 });
  other = await SigningKeyRing.open({ store: new InMemorySigningKeyStore(), maxTokenTtlSeconds: 3600 });
  const handler = createJwksHandler(keys);
  server = http.createServer((req, res) => void (handler(req, res) || res.writeHead(404).end()));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

const mint = (ring: SigningKeyRing, opts: { issuer?: string; now?: () => number; scopes?: string[] } = {}) =>
  new AccessTokenMinter({ keys: ring, issuer: opts.issuer ?? ISSUER, now: opts.now }).mintAccessToken({
    serviceAccount: "sa@p.trustplane",
    scopes: opts.scopes ?? ["files.read"],
    audience: AUD,
    vmId: "vm1",
    hostId: "h1",
  });

async function refused(jwt: string, options: Partial<Parameters<typeof verifyAccessToken>[1]> = {}): Promise<TrustplaneError> {
  const e = await verifyAccessToken(jwt, { jwksUrl, issuer: ISSUER, audience: AUD, ...options }).then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(TrustplaneError);
  return e as TrustplaneError;
}

describe("sdk verifyAccessToken", () => {
  it("accepts a valid token and returns its claims", async () => {
    const claims = await verifyAccessToken((await mint(keys)).jwt, { jwksUrl, issuer: ISSUER, audience: AUD, requiredScopes: ["files.read"] });
    expect(claims).toMatchObject({ sub: "sa@p.trustplane", scope: "files.read", tp_vm: "vm1", tp_host: "h1" });
  });

  it("refuses expired, forged, wrongly addressed and under-scoped tokens", async () => {
    const expired = await mint(keys, { now: () => Date.now() - 2 * 3600_000 });
    expect((await refused(expired.jwt)).reason).toBe("TOKEN_EXPIRED");
    const forged = await mint(other);
    expect((await refused(forged.jwt)).status).toBe("UNAUTHENTICATED");
    const good = (await mint(keys)).jwt;
    expect((await refused(good, { issuer: "https://evil.test" })).reason).toBe("TOKEN_CLAIM_INVALID");
    expect((await refused(good, { audience: "https://other.test" })).reason).toBe("TOKEN_CLAIM_INVALID");
    const scope = await refused(good, { requiredScopes: ["files.write"] });
    expect(scope.status).toBe("PERMISSION_DENIED");
    expect(scope.reason).toBe("INSUFFICIENT_SCOPE");
  });

  it("refuses an identity token (typ JWT) presented as an access token", async () => {
    const key = keys.current();
    const idToken = await new SignJWT({ scope: "files.read", email: "sa@p.trustplane" })
      .setProtectedHeader({ alg: "EdDSA", kid: key.kid, typ: "JWT" })
      .setIssuer(ISSUER)
      .setSubject("sa@p.trustplane")
      .setAudience(AUD)
      .setIssuedAt()
      .setExpirationTime("10m")
      .setJti("x")
      .sign(key.privateKey);
    expect((await refused(idToken)).status).toBe("UNAUTHENTICATED");
  });
});
