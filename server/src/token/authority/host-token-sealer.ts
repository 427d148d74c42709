// Seals a rotated long-term token to the host that holds it (HPKE base mode to the host's
// X25519 sealing key from storage.hosts), so neither a pushed update nor a NOTIFY between
// replicas carries a usable secret. The agent opens it with its sealing private key.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { importX25519Jwk, open, seal } from "../../../../sdk/src/envelope/index.js";
import type { HostRepository } from "../../runtime/storage/host-repository.js";
import type { TokenSealer } from "./token-update-hub.js";

/** What a sealed secret is: a long-term token pushed in an update, or a mint session key. */
export type SealedPurpose = "token update" | "host session";

/** AAD binds the sealed secret to the host it was sealed for and to what it is for. */
function aad(hostId: string, purpose: SealedPurpose): Uint8Array {
  return Buffer.from(`trustplane ${purpose}\0${hostId}`, "utf8");
}

export class HostTokenSealer implements TokenSealer {
  constructor(private readonly hosts: Pick<HostRepository, "get">) {}

  async seal(hostId: string, token: string, purpose: SealedPurpose = "token update"): Promise<string> {
    const host = await this.hosts.get(hostId);
    if (!host) throw new TrustplaneError("NOT_FOUND", "HOST_UNKNOWN", `host ${hostId} has not joined`, "host_id");
    const { publicKey } = importX25519Jwk(JSON.parse(host.sealingJwk));
    const sealed = seal(publicKey, Buffer.from(token, "utf8"), { aad: aad(hostId, purpose) });
    return Buffer.concat([sealed.enc, sealed.ciphertext]).toString("base64url");
  }
}

/** Agent side: opens a secret sealed by HostTokenSealer with the host's private sealing key. */
export function openSealedToken(privateKey: Uint8Array, hostId: string, sealed: string | Uint8Array, purpose: SealedPurpose = "token update"): string {
  const bytes = typeof sealed === "string" ? Buffer.from(sealed, "base64url") : Buffer.from(sealed);
  if (bytes.length <= 32 + 16) throw new TrustplaneError("DATA_LOSS", "SEALED_TOKEN_MALFORMED", "sealed token is too short");
  return Buffer.from(open(privateKey, bytes.subarray(0, 32), bytes.subarray(32), { aad: aad(hostId, purpose) })).toString("utf8");
}
