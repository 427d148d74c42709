// HostKeysService on the server: each joined host's signing key (to verify its results) and
// X25519 sealing key (to seal requests to it), bound together by the CA's signature, so an
// operator who pinned the CA key need not trust the server relaying them. Writes the CA's
// public key to <dataDir>/ca.pub.jwk.json at start for clients to pin.
import { randomBytes } from "node:crypto";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { issueCertificate, signEnvelope } from "../../../sdk/src/auth/index.js";
import { importX25519Jwk } from "../../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { HostKeyBinding, HostKeysServiceService } from "../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HOST_KEY_BINDING_TYPE } from "../../../sdk/src/privileged/payload-types.js";
import type { ServerArea } from "../processes/area.js";

export { HOST_KEY_BINDING_TYPE };

/** Where the CA's public key is written for clients to pin (`trustplane dev` reads it from here). */
export const PINNED_CA_FILE = "ca.pub.jwk.json";

export const hostKeysServerArea: ServerArea = {
  name: "privileged",
  async start(ctx) {
    // The CA's public half, for clients to pin out of band: they then verify host bindings
    // against it alone, whatever a server later claims its CA is. Public, so 0644.
    const pinned = path.join(ctx.config.dataDir, PINNED_CA_FILE);
    mkdirSync(path.dirname(pinned), { recursive: true, mode: 0o700 });
    const tmp = `${pinned}.${randomBytes(4).toString("hex")}.tmp`;
    writeFileSync(tmp, JSON.stringify(ctx.ca.publicJwk, null, 2) + "\n", { mode: 0o644 });
    renameSync(tmp, pinned);
    ctx.bind(HostKeysServiceService, {
      async getHostKeys(req) {
        const all = await ctx.storage.hosts.list();
        const wanted = req.hostIds.length ? all.filter((h) => req.hostIds.includes(h.hostId)) : all;
        const missing = req.hostIds.filter((id) => !all.some((h) => h.hostId === id));
        if (missing.length) throw new TrustplaneError("NOT_FOUND", "HOST_UNKNOWN", `unknown hosts: ${missing.join(", ")}`, "host_ids");
        return {
          hosts: wanted.map((h) => {
            const binding = HostKeyBinding.fromPartial({
              hostId: h.hostId,
              signingKeyId: h.signingKeyId,
              signingJwk: h.signingJwk,
              sealingPublicKey: importX25519Jwk(JSON.parse(h.sealingJwk)).publicKey,
              issuedAtMs: Date.now(),
              caKeyId: ctx.ca.keyId,
            });
            const now = Date.now();
            const hostCertificate = issueCertificate(ctx.ca, {
              serial: randomBytes(16).toString("hex"),
              principal: `host:${h.hostId}`,
              publicKeyJwk: h.signingJwk,
              operationClasses: [],
              hostPattern: h.hostId,
              notBeforeMs: now - 60_000,
              notAfterMs: now + 24 * 3600_000,
              options: [],
            });
            return { hostId: h.hostId, binding: signEnvelope(HOST_KEY_BINDING_TYPE, HostKeyBinding.encode(binding).finish(), [ctx.ca]), hostCertificate };
          }),
          caJwks: [JSON.stringify(ctx.ca.publicJwk)],
        };
      },
    });
  },
};
