// Shared by the privileged examples: an operator certificate from the dev CA, and the host's
// keys verified through the CA-signed binding (the server only relays them).
import { SignedEnvelope } from "../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { HostKeyBinding, HostKeysServiceService } from "../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { generateSigningKey, importVerificationKey, verifyEnvelopeSync, type SigningKey, type VerificationKey } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { HOST_KEY_BINDING_TYPE } from "../server/src/privileged/host-keys-server-area.js";
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

export async function hostKeys(ctx: TourContext, hostId: string): Promise<{ signing: VerificationKey; sealing: Uint8Array }> {
  const keys = createClient(HostKeysServiceService, ctx.server, { key: ctx.admin });
  try {
    const res = await keys.getHostKeys({ hostIds: [hostId] });
    const ca = importVerificationKey(res.caJwks[0]!);
    const binding = HostKeyBinding.decode(verifyEnvelopeSync(res.hosts[0]!.binding!, { expectedType: HOST_KEY_BINDING_TYPE, resolveKey: (id) => (id === ca.keyId ? ca : undefined) }).payload);
    return { signing: importVerificationKey(binding.signingJwk), sealing: binding.sealingPublicKey };
  } finally {
    keys.close();
  }
}
