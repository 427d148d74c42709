// The framed pipe protocol between the job service (host side) and the untrusted job runner
// (seed 003, "the job VM"): [u32 length][u8 kind][payload] on the runner's stdin/stdout.
// Control messages are JSON; input ciphertext, result ciphertext and code travel as raw bytes.
import type { Readable, Writable } from "node:stream";

export const FRAME_CONTROL = 1;
/** Envelope ciphertext of the job's input, host → runner. */
export const FRAME_DATA = 2;
/** Envelope ciphertext of the job's result, runner → host. */
export const FRAME_RESULT = 3;
/** The WebAssembly module, host → runner. */
export const FRAME_CODE = 4;

/** Frames larger than this are a protocol violation (segments are ≤ 1 MiB + tag by default). */
export const MAX_FRAME = 80 * 1024 * 1024;

export interface Frame {
  kind: number;
  payload: Buffer;
}

/** Host → runner control messages. */
export type HostMessage =
  | { t: "start"; jobId: string; otkDigest: string; codeSha256: string; dekId: string; data: { tenant: string; name: string } | { inline: true }; memoryBytes: number; wallClockMs: number }
  | { t: "keyRelease"; enc: string; sealedDek: string }
  | { t: "keyDenied"; reason: string }
  | { t: "dataBegin" }
  | { t: "dataEnd" }
  | { t: "dataRefused"; reason: string };

/** Runner → host control messages. */
export type RunnerMessage =
  | { t: "keyRequest"; publicKey: string }
  | { t: "read"; data: { tenant: string; name: string } | { inline: true } }
  | { t: "progress"; state: "RUNNING" | "STORING"; bytes: number }
  | { t: "done"; resultBytes: number; maxRssKiB: number }
  | { t: "failed"; reason: string; detail: string };

export function encodeFrame(kind: number, payload: Uint8Array): Buffer[] {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32BE(payload.length + 1, 0);
  head.writeUInt8(kind, 4);
  return [head, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)];
}

export function controlFrame(message: HostMessage | RunnerMessage): Buffer[] {
  return encodeFrame(FRAME_CONTROL, Buffer.from(JSON.stringify(message), "utf8"));
}

/** Writes a frame, waiting for the pipe to drain (backpressure: never buffer a whole stream). */
export async function writeFrame(out: Writable, parts: Buffer[]): Promise<void> {
  let ok = true;
  for (const p of parts) ok = out.write(p) && ok;
  if (!ok && !out.destroyed) {
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        out.off("drain", done);
        out.off("close", done);
        out.off("error", fail);
        resolve();
      };
      const fail = (e: Error) => {
        out.off("drain", done);
        out.off("close", done);
        reject(e);
      };
      out.once("drain", done);
      out.once("close", done);
      out.once("error", fail);
    });
  }
}

/** Parses frames from a byte stream; ends when the stream ends on a frame boundary. */
export async function* readFrames(input: Readable | AsyncIterable<Buffer>): AsyncGenerator<Frame> {
  // Pieces are joined once per frame (not once per pipe read), so a 1 MiB frame arriving in
  // 64 KiB reads is copied once.
  let pieces: Buffer[] = [];
  let queued = 0;
  let need = 5;
  const take = (n: number): Buffer => {
    const joined = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, queued);
    const out = joined.subarray(0, n);
    const rest = joined.subarray(n);
    pieces = rest.length > 0 ? [rest] : [];
    queued = rest.length;
    return out;
  };
  let header: Buffer | undefined;
  for await (const piece of input as AsyncIterable<Buffer>) {
    pieces.push(piece);
    queued += piece.length;
    while (queued >= need) {
      if (!header) {
        header = take(5);
        const len = header.readUInt32BE(0);
        if (len < 1 || len > MAX_FRAME) throw new Error(`frame length ${len} out of range`);
        need = len - 1;
        if (need > 0) continue;
      }
      const payload = need > 0 ? take(need) : Buffer.alloc(0);
      const kind = header[4]!;
      header = undefined;
      need = 5;
      yield { kind, payload };
    }
  }
  if (queued > 0 || header) throw new Error("stream ended inside a frame");
}

export function parseControl<T>(frame: Frame): T {
  if (frame.kind !== FRAME_CONTROL) throw new Error(`expected a control frame, got kind ${frame.kind}`);
  return JSON.parse(frame.payload.toString("utf8")) as T;
}
