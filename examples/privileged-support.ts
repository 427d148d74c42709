// Shared by the privileged examples: an operator certificate from the dev CA, and the host's
// keys verified through the CA-signed binding against the pinned CA key (the server only relays them).
import { SignedEnvelope } from "../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { HostKeysServiceService } from "../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { generateSigningKey, type SigningKey } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { trustedHostKeys, type TrustedHostKeys } from "../sdk/src/privileged/index.js";
import { PINNED_CA_FILE } from "../server/src/privileged/host-keys-server-area.js";
import type { TourContext } from "./tour-context.js";

export interface Operator {
  name: string;
  key: SigningKey;
  certificate: Uint8Array;
}

export async function certifiedOperator(ctx: TourContext, name: string, classes: string[]): Promise<Operator> {
  const auth = createClient(AuthServiceService, ctx.server, { key: ctx.admin });
  try {
    const exists = (await auth.listPrincipals({ pageSize: 1000 })).principals.some((p) => p.name === name);
    if (!exists) await auth.createPrincipal({ requestId: `demo-principal-${name}`, name, kind: "user" });
    const key = generateSigningKey("Ed25519");
    const { certificate } = await auth.issueCertificate({
      requestId: `demo-cert-${name}-${key.keyId}`,
      principal: name,
      publicKeyJwk: JSON.stringify(key.publicJwk),
      operationClasses: classes,
      hostPattern: "dev-host-*",
      ttlSeconds: 900,
    });
    return { name, key, certificate: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}

/**
 * The host's keys, trusted because the CA key pinned from the dev data dir (ca.pub.jwk.json,
 * written by `trustplane dev`) signed their binding, not because the server relayed them.
 */
export async function hostKeys(ctx: TourContext, hostId: string): Promise<TrustedHostKeys> {
  const pin = { caJwk: readFileSync(path.join(ctx.dataDir, PINNED_CA_FILE), "utf8") };
  const keys = createClient(HostKeysServiceService, ctx.server, { key: ctx.admin });
  try {
    return trustedHostKeys(await keys.getHostKeys({ hostIds: [hostId] }), pin).get(hostId)!;
  } finally {
    keys.close();
  }
}
