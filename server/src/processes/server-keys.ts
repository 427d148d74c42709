// The server's own key material under <dataDir>/server/: the CA key that certifies hosts and
// operators, and the service key the server signs agent-bound calls with (certified by the CA
// on every start so agents, which trust only the CA, can verify it).
import type { JsonWebKey } from "node:crypto";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { exportPrivateJwk, generateSigningKey, importSigningKey, type SigningKey } from "../../../sdk/src/auth/index.js";
import { issueCertificate } from "../../../sdk/src/auth/certificate.js";
import { SignedEnvelope } from "../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { readJsonSecretFile, writeSecretFile } from "../runtime/key-file.js";

export const SERVER_PRINCIPAL = "trustplane-server";

export function loadOrCreateKey(file: string): SigningKey {
  if (!existsSync(file)) writeSecretFile(file, JSON.stringify(exportPrivateJwk(generateSigningKey("Ed25519")), null, 2) + "\n");
  return importSigningKey(readJsonSecretFile<JsonWebKey>(file));
}

export interface ServerKeys {
  ca: SigningKey;
  service: SigningKey;
  /** Certificate envelope bytes for the service key, principal trustplane-server. */
  serviceCertificate: Uint8Array;
}

export function loadServerKeys(dataDir: string, nowMs = Date.now()): ServerKeys {
  const ca = loadOrCreateKey(path.join(dataDir, "server", "ca.jwk.json"));
  const service = loadOrCreateKey(path.join(dataDir, "server", "service.jwk.json"));
  const envelope = issueCertificate(ca, {
    serial: randomBytes(16).toString("hex"),
    principal: SERVER_PRINCIPAL,
    publicKeyJwk: JSON.stringify(service.publicJwk),
    operationClasses: [],
    hostPattern: "*",
    notBeforeMs: nowMs - 60_000,
    notAfterMs: nowMs + 7 * 24 * 3600 * 1000,
    options: [],
  });
  return { ca, service, serviceCertificate: SignedEnvelope.encode(envelope).finish() };
}
