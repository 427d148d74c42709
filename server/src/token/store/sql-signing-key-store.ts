// SigningKeyStore over the shared SqlDb (migration 002-token). The private JWK is sealed at
// rest with AES-256-GCM under a key derived (HKDF-SHA256, own label) from the server's CA key:
// every replica already holds the CA key, so nothing new has to be distributed, and a database
// dump or backup alone yields no usable signing key. The kid is the AAD, so sealed rows cannot
// be swapped between keys.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import type { JWK } from "jose";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { SqlDb } from "../../runtime/storage/sql-db.js";
import type { SigningKeyStore, StoredSigningKey } from "../authority/signing-keys.js";

const LABEL = "trustplane token signing keys at rest v1";

/**
 * Derives the at-rest key from secret key material (the CA private key bytes). A different
 * label than any other use, so the derived key reveals nothing about the CA key.
 */
export function deriveAtRestKey(secret: Uint8Array): Buffer {
  if (secret.length < 32) throw new TrustplaneError("INVALID_ARGUMENT", "AT_REST_SECRET_SHORT", "the at-rest key needs at least 32 bytes of secret material");
  return Buffer.from(hkdfSync("sha256", secret, Buffer.from("trustplane-token"), Buffer.from(LABEL), 32));
}

interface Row {
  kid: string;
  public_jwk: string;
  sealed_private_jwk: Uint8Array;
  created_at_ms: number;
  activates_at_ms: number | null;
  rotated_at_ms: number | null;
  retire_at_ms: number | null;
}

export class SqlSigningKeyStore implements SigningKeyStore {
  constructor(
    private readonly db: SqlDb,
    private readonly atRestKey: Uint8Array,
  ) {
    if (atRestKey.length !== 32) throw new TrustplaneError("INVALID_ARGUMENT", "AT_REST_KEY_SIZE", "the at-rest key must be 32 bytes");
  }

  async load(): Promise<StoredSigningKey[]> {
    const rows = await this.db.all<Row>("SELECT * FROM token_signing_keys ORDER BY created_at_ms");
    return rows.map((r) => {
      const key: StoredSigningKey = {
        kid: r.kid,
        publicJwk: JSON.parse(r.public_jwk) as JWK,
        privateJwk: this.open(r.kid, Buffer.from(r.sealed_private_jwk)),
        createdAtMs: Number(r.created_at_ms),
      };
      if (r.activates_at_ms != null) key.activatesAtMs = Number(r.activates_at_ms);
      if (r.rotated_at_ms != null) key.rotatedAtMs = Number(r.rotated_at_ms);
      if (r.retire_at_ms != null) key.retireAtMs = Number(r.retire_at_ms);
      return key;
    });
  }

  async save(key: StoredSigningKey): Promise<void> {
    await this.db.run(
      `INSERT INTO token_signing_keys (kid, public_jwk, sealed_private_jwk, created_at_ms, activates_at_ms, rotated_at_ms, retire_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (kid) DO UPDATE SET rotated_at_ms = excluded.rotated_at_ms, retire_at_ms = excluded.retire_at_ms`,
      [key.kid, JSON.stringify(key.publicJwk), this.seal(key.kid, key.privateJwk), key.createdAtMs, key.activatesAtMs ?? null, key.rotatedAtMs ?? null, key.retireAtMs ?? null],
    );
  }

  async remove(kid: string): Promise<void> {
    await this.db.run("DELETE FROM token_signing_keys WHERE kid = ?", [kid]);
  }

  private seal(kid: string, jwk: JWK): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.atRestKey, iv);
    cipher.setAAD(Buffer.from(kid, "utf8"));
    const body = Buffer.concat([cipher.update(JSON.stringify(jwk), "utf8"), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]);
  }

  private open(kid: string, sealed: Buffer): JWK {
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.atRestKey, sealed.subarray(0, 12));
      decipher.setAAD(Buffer.from(kid, "utf8"));
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      const plain = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
      return JSON.parse(plain.toString("utf8")) as JWK;
    } catch {
      throw new TrustplaneError(
        "DATA_LOSS",
        "SIGNING_KEY_UNREADABLE",
        `token signing key ${kid} does not open with this server's CA-derived key; every replica must share <dataDir>/server/ca.jwk.json`,
      );
    }
  }
}
