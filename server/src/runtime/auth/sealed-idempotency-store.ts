// Idempotency records sealed at rest: a stored response is what a retry gets back, and some
// responses carry secrets (a long-term token issued to an admin, a join token), so the
// binder's store keeps each response encrypted with AES-256-GCM under a key derived from the
// server's CA secret, bound to its (scope, request_id). The database never holds them in clear.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { IdempotencyRecord, IdempotencyStore } from "./idempotency-store.js";

const MAGIC = Buffer.from("TPS1");
const IV = 12;
const TAG = 16;

/** The at-rest key for idempotency records, from secret material shared by every replica. */
export function idempotencyKey(secret: Uint8Array): Buffer {
  if (secret.length < 32) throw new TrustplaneError("INVALID_ARGUMENT", "AT_REST_SECRET_SHORT", "the at-rest key needs at least 32 bytes of secret material");
  return Buffer.from(hkdfSync("sha256", secret, Buffer.from("trustplane-idempotency"), Buffer.from("idempotency record v1"), 32));
}

function aad(scope: string, requestId: string): Buffer {
  return Buffer.from(JSON.stringify([scope, requestId]));
}

export class SealedIdempotencyStore implements IdempotencyStore {
  constructor(
    private readonly inner: IdempotencyStore,
    private readonly key: Buffer,
  ) {}

  async put(scope: string, requestId: string, requestDigest: Uint8Array, response: Uint8Array): Promise<void> {
    const iv = randomBytes(IV);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    c.setAAD(aad(scope, requestId));
    const body = Buffer.concat([c.update(response), c.final()]);
    await this.inner.put(scope, requestId, requestDigest, Buffer.concat([MAGIC, iv, body, c.getAuthTag()]));
  }

  async get(scope: string, requestId: string): Promise<IdempotencyRecord | undefined> {
    const rec = await this.inner.get(scope, requestId);
    if (!rec) return undefined;
    const sealed = Buffer.from(rec.response);
    // Records written before responses were sealed are replayed as they are.
    if (sealed.length < MAGIC.length + IV + TAG || !sealed.subarray(0, MAGIC.length).equals(MAGIC)) return rec;
    const d = createDecipheriv("aes-256-gcm", this.key, sealed.subarray(MAGIC.length, MAGIC.length + IV));
    d.setAAD(aad(scope, requestId));
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    try {
      const response = Buffer.concat([d.update(sealed.subarray(MAGIC.length + IV, sealed.length - TAG)), d.final()]);
      return { requestDigest: rec.requestDigest, response };
    } catch {
      throw new TrustplaneError("DATA_LOSS", "IDEMPOTENCY_RECORD_INVALID", `the stored response for request_id ${JSON.stringify(requestId)} does not open under this server's key (tampered, or from another CA); use a new request_id`, "request_id");
    }
  }
}
