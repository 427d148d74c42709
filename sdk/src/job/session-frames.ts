// Sealed session frames (seed 003, "secure channel"): every job-session message after the
// handshake is encoded and sealed with AES-256-GCM under its direction's session key, with
// the frame's sequence number as the nonce and the session id and direction in the AAD. The
// opener accepts only the next sequence number, so a dropped, reordered, replayed, altered
// or reflected frame fails to open — and a failed frame ends the session.
import { createCipheriv, createDecipheriv } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import type { SessionFrame } from "../gen/trustplane/job/v1/job.js";
import { lengthPrefixed } from "./job-bindings.js";

export type SessionDirection = "client-to-service" | "service-to-client";

const TAG = 16;

function nonce(seq: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(seq), 4);
  return n;
}

function aad(sessionId: string, direction: SessionDirection, seq: number): Buffer {
  return lengthPrefixed(["trustplane job session frame", sessionId, direction, String(seq)]);
}

export function frameRefused(detail: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", "SESSION_FRAME_INVALID", `the session message was refused: ${detail}; the session is closed, open a new one`);
}

/** One direction's key and sequence: a private copy of the key (the caller wipes its schedule). */
abstract class FrameDirection {
  protected seq = 0;
  protected readonly key: Buffer;

  constructor(
    key: Uint8Array,
    protected readonly sessionId: string,
    protected readonly direction: SessionDirection,
  ) {
    this.key = Buffer.from(key);
  }

  protected aad(seq: number): Buffer {
    return aad(this.sessionId, this.direction, seq);
  }

  wipe(): void {
    this.key.fill(0);
  }
}

/** Seals outgoing messages of one direction, numbering them 1, 2, 3, … */
export class FrameSealer extends FrameDirection {
  seal(body: Uint8Array): SessionFrame {
    const seq = ++this.seq;
    const c = createCipheriv("aes-256-gcm", this.key, nonce(seq));
    c.setAAD(this.aad(seq));
    const head = c.update(body);
    const tail = c.final();
    return { seq, ciphertext: Buffer.concat([head, tail, c.getAuthTag()]) };
  }
}

/** Opens incoming frames of one direction, strictly in sequence. */
export class FrameOpener extends FrameDirection {
  open(frame: SessionFrame | undefined): Buffer {
    if (!frame) throw frameRefused("after the handshake every message must be a sealed frame");
    const seq = Number(frame.seq);
    if (seq !== this.seq + 1) throw frameRefused(`expected frame ${this.seq + 1}, got ${seq} (dropped, reordered or replayed)`);
    if (frame.ciphertext.length < TAG) throw frameRefused("the frame is too short");
    const d = createDecipheriv("aes-256-gcm", this.key, nonce(seq));
    d.setAAD(this.aad(seq));
    d.setAuthTag(frame.ciphertext.subarray(frame.ciphertext.length - TAG));
    const head = d.update(frame.ciphertext.subarray(0, frame.ciphertext.length - TAG));
    try {
      const tail = d.final();
      this.seq = seq;
      return tail.length ? Buffer.concat([head, tail]) : head;
    } catch {
      head.fill(0);
      throw frameRefused("it does not authenticate under this session's key (altered, or not from the session's peer)");
    }
  }
}
