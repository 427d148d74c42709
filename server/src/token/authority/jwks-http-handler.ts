// Serves the authority's public signing keys at /.well-known/jwks.json (seed 000: "JWKS
// served over HTTP") as a plain node:http handler the server process mounts where it likes.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { SigningKeyRing } from "./signing-keys.js";

export const JWKS_PATH = "/.well-known/jwks.json";

/** Returns true when it answered the request, false to let the caller route it elsewhere. */
export function createJwksHandler(keys: SigningKeyRing, maxAgeSeconds = 300) {
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== JWKS_PATH) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return true;
    }
    const body = JSON.stringify(keys.jwks());
    // Short max-age: a rotated-in key must reach verifiers before tokens signed with it do;
    // jose's remote key set also refetches on an unknown kid.
    res.writeHead(200, {
      "content-type": "application/jwk-set+json",
      "cache-control": `public, max-age=${maxAgeSeconds}`,
      "content-length": Buffer.byteLength(body),
    });
    res.end(req.method === "HEAD" ? undefined : body);
    return true;
  };
}
