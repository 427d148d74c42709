// HPKE base-mode key schedule and encryption context (RFC 9180 §5.1, §5.2) for the one suite
// Trustplane uses: DHKEM(X25519, HKDF-SHA256) 0x0020, HKDF-SHA256 0x0001, AES-256-GCM 0x0002.
// Part of "Sealed results and the envelope format". Internal: the public API is hpke.ts; tests
// use setupBaseSender's fixed-ephemeral-key parameter to reproduce the RFC 9180 vectors.

import { createCipheriv, createDecipheriv } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import { decap, encap } from "./dhkem-x25519.js";
import { labeledExpand, labeledExtract, SHA256_LENGTH } from "./hpke-labeled-kdf.js";
import type { X25519PrivateKeyInput } from "./x25519-keys.js";

export const KEM_ID = 0x0020;
export const KDF_ID = 0x0001;
export const AEAD_ID = 0x0002;
/** "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2). */
const HPKE_SUITE_ID = Buffer.from([0x48, 0x50, 0x4b, 0x45, 0x00, 0x20, 0x00, 0x01, 0x00, 0x02]);
const MODE_BASE = 0x00;
const NK = 32;
const NN = 12;
export const NT = 16;
const EMPTY = new Uint8Array(0);

export interface KeySchedule {
  key: Buffer;
  baseNonce: Buffer;
  exporterSecret: Buffer;
}

/** KeySchedule(mode_base, shared_secret, info, psk = "", psk_id = ""). */
export function keySchedule(sharedSecret: Uint8Array, info: Uint8Array): KeySchedule {
  const pskIdHash = labeledExtract(HPKE_SUITE_ID, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = labeledExtract(HPKE_SUITE_ID, EMPTY, "info_hash", info);
  const context = Buffer.concat([Uint8Array.of(MODE_BASE), pskIdHash, infoHash]);
  const secret = labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", EMPTY);
  const schedule = {
    key: labeledExpand(HPKE_SUITE_ID, secret, "key", context, NK),
    baseNonce: labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", context, NN),
    exporterSecret: labeledExpand(HPKE_SUITE_ID, secret, "exp", context, SHA256_LENGTH),
  };
  secret.fill(0);
  return schedule;
}

/** One HPKE encryption context: the sender seals, the recipient opens, in sequence order. */
export class HpkeContext {
  private seq = 0;

  constructor(private readonly schedule: KeySchedule) {}

  /** Exposed for the RFC 9180 vector tests only. */
  get keyScheduleForTesting(): Readonly<KeySchedule> {
    return this.schedule;
  }

  seal(aad: Uint8Array, plaintext: Uint8Array): Buffer {
    const cipher = createCipheriv("aes-256-gcm", this.schedule.key, this.nextNonce());
    cipher.setAAD(aad);
    const head = cipher.update(plaintext);
    const tail = cipher.final();
    return Buffer.concat([head, tail, cipher.getAuthTag()]);
  }

  /** Returns undefined when the ciphertext does not authenticate; callers choose the error. */
  open(aad: Uint8Array, ciphertext: Uint8Array): Buffer | undefined {
    if (ciphertext.length < NT) return undefined;
    const nonce = this.computeNonce();
    const decipher = createDecipheriv("aes-256-gcm", this.schedule.key, nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(ciphertext.subarray(ciphertext.length - NT));
    const head = decipher.update(ciphertext.subarray(0, ciphertext.length - NT));
    try {
      const tail = decipher.final();
      this.seq++;
      return tail.length === 0 ? head : Buffer.concat([head, tail]);
    } catch {
      head.fill(0);
      return undefined;
    }
  }

  /** RFC 9180 §5.3 secret export: LabeledExpand(exporter_secret, "sec", exporter_context, L). */
  export(exporterContext: Uint8Array, length: number): Buffer {
    return labeledExpand(HPKE_SUITE_ID, this.schedule.exporterSecret, "sec", exporterContext, length);
  }

  /** Wipes the context's keys; the context is unusable afterwards. */
  destroy(): void {
    this.schedule.key.fill(0);
    this.schedule.baseNonce.fill(0);
    this.schedule.exporterSecret.fill(0);
  }

  private nextNonce(): Buffer {
    const nonce = this.computeNonce();
    this.seq++;
    return nonce;
  }

  /** base_nonce XOR I2OSP(seq, Nn). */
  private computeNonce(): Buffer {
    if (this.seq >= Number.MAX_SAFE_INTEGER) {
      throw new TrustplaneError("RESOURCE_EXHAUSTED", "HPKE_MESSAGE_LIMIT", "HPKE context sequence number exhausted");
    }
    const nonce = Buffer.from(this.schedule.baseNonce);
    let seq = this.seq;
    for (let i = NN - 1; i >= 0 && seq > 0; i--) {
      nonce[i]! ^= seq & 0xff;
      seq = Math.floor(seq / 256);
    }
    return nonce;
  }
}

export function setupBaseSender(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  fixedEphemeralPrivateKey?: Uint8Array,
): { enc: Uint8Array; context: HpkeContext; sharedSecret: Buffer } {
  const { sharedSecret, enc } = encap(recipientPublicKey, fixedEphemeralPrivateKey);
  const context = new HpkeContext(keySchedule(sharedSecret, info));
  return { enc, context, sharedSecret };
}

export function setupBaseRecipient(
  enc: Uint8Array,
  recipientPrivateKey: X25519PrivateKeyInput,
  info: Uint8Array,
): { context: HpkeContext; sharedSecret: Buffer } {
  const sharedSecret = decap(enc, recipientPrivateKey);
  const context = new HpkeContext(keySchedule(sharedSecret, info));
  return { context, sharedSecret };
}
