// SDK step 1 of seed 003: encrypt a file or stream with the client's DEK into the envelope
// format and upload the ciphertext to hosted storage (StorageService.PutObject). The signed
// client stream needs the digest of every message before the first leaves, so the ciphertext
// is spooled to a private temp file and sent in a second pass; plaintext never leaves.
import { randomBytes } from "node:crypto";
import { createReadStream, type ReadStream } from "node:fs";
import { mkdtemp, open, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { SignedClient } from "../client/create-client.js";
import { TrustplaneError } from "../errors.js";
import { fileChunks } from "./file-chunks.js";
import { DEFAULT_SEGMENT_SIZE, encryptStream } from "../envelope/encrypt-stream.js";
import { TAG_LENGTH } from "../envelope/segment-cipher.js";
import type { ObjectRef, StorageServiceService } from "../gen/trustplane/job/v1/storage.js";

export interface TransferProgress {
  phase: "encrypt" | "upload" | "download" | "decrypt";
  bytes: number;
  total?: number;
}

export interface EncryptToStorageOptions {
  dek: Uint8Array;
  dekId: string;
  tenant: string;
  /** Empty lets the service pick a name. */
  name?: string;
  /** Plaintext size if known (for progress). */
  size?: number;
  onProgress?: (p: TransferProgress) => void;
  /** Where the ciphertext is spooled (default: the OS temp dir). */
  spoolDir?: string;
}

const CHUNK = 1024 * 1024;

export type PlaintextSource = string | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

function sourceOf(source: PlaintextSource): AsyncIterable<Uint8Array> | Iterable<Uint8Array> {
  return typeof source === "string" ? (createReadStream(source, { highWaterMark: CHUNK }) as ReadStream & AsyncIterable<Buffer>) : source;
}

/** Encrypts into an envelope file; returns its size. */
export async function encryptToFile(
  source: PlaintextSource,
  file: string,
  key: { dek: Uint8Array; dekId: string },
  onProgress?: (p: TransferProgress) => void,
  total?: number,
): Promise<number> {
  const out = await open(file, "wx", 0o600);
  let plain = 0;
  let written = 0;
  try {
    const counted = (async function* () {
      for await (const c of sourceOf(source)) {
        plain += c.length;
        onProgress?.({ phase: "encrypt", bytes: plain, total });
        yield c;
      }
    })();
    // Written in ~1 MiB batches: one awaited write per segment, not per piece.
    let batch: Uint8Array[] = [];
    let batched = 0;
    for await (const piece of encryptStream(counted, { dek: key.dek, dekId: key.dekId })) {
      batch.push(piece);
      batched += piece.length;
      if (batched >= CHUNK) {
        await out.writev(batch);
        written += batched;
        batch = [];
        batched = 0;
      }
    }
    if (batched > 0) await out.writev(batch);
    written += batched;
  } finally {
    await out.close();
  }
  return written;
}

/** Uploads an envelope file (already encrypted) as one object. */
export async function uploadFile(
  storage: SignedClient<typeof StorageServiceService>,
  file: string,
  size: number,
  opts: { tenant: string; name?: string; onProgress?: (p: TransferProgress) => void },
): Promise<ObjectRef> {
  const requestId = `put-${randomBytes(8).toString("hex")}`;
  let pass = 0;
  const res = await storage.putObject(() =>
    (async function* () {
      pass++;
      yield { header: { requestId, tenant: opts.tenant, name: opts.name ?? "", size } };
      // Pass 1 only digests the stream for the call signature; pass 2 sends it.
      const progress = pass > 1 ? (bytes: number) => opts.onProgress?.({ phase: "upload", bytes, total: size }) : undefined;
      for await (const chunk of fileChunks(file, size, CHUNK, progress)) yield { chunk };
    })(),
  );
  return res.object!;
}

export async function encryptToStorage(storage: SignedClient<typeof StorageServiceService>, source: PlaintextSource, opts: EncryptToStorageOptions): Promise<ObjectRef> {
  const dir = await mkdtemp(path.join(opts.spoolDir ?? os.tmpdir(), "tp-spool-"));
  const file = path.join(dir, "object.tpev");
  try {
    const plainSize = opts.size ?? (typeof source === "string" ? (await stat(source)).size : undefined);
    if (plainSize === undefined) {
      const size = await encryptToFile(source, file, opts, opts.onProgress, opts.size);
      return await uploadFile(storage, file, size, opts);
    }
    return await encryptAndUpload(storage, source, file, plainSize, opts);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * With the plaintext size known, the ciphertext size is too, so the signature's digest pass
 * IS the encryption pass (spooling as it goes, in the exact message chunking the send pass
 * reads back): the plaintext is read and encrypted once.
 */
async function encryptAndUpload(storage: SignedClient<typeof StorageServiceService>, source: PlaintextSource, file: string, plainSize: number, opts: EncryptToStorageOptions): Promise<ObjectRef> {
  const key = { dek: opts.dek, dekId: opts.dekId };
  const probe = encryptStream([], key);
  const headerLength = (await probe.next()).value!.length;
  await probe.return(undefined);
  const size = headerLength + plainSize + TAG_LENGTH * Math.max(1, Math.ceil(plainSize / DEFAULT_SEGMENT_SIZE));
  const requestId = `put-${randomBytes(8).toString("hex")}`;
  const header = { header: { requestId, tenant: opts.tenant, name: opts.name ?? "", size } };
  let pass = 0;
  const res = await storage.putObject(() =>
    (async function* () {
      pass++;
      yield header;
      if (pass === 1) {
        const out = await open(file, "wx", 0o600);
        try {
          let plain = 0;
          const counted = (async function* () {
            for await (const c of sourceOf(source)) {
              plain += c.length;
              opts.onProgress?.({ phase: "encrypt", bytes: plain, total: plainSize });
              yield c;
            }
          })();
          let pending: Uint8Array[] = [];
          let queued = 0;
          let written = 0;
          const emit = async (n: number): Promise<Buffer> => {
            const joined = Buffer.concat(pending, queued);
            const chunk = joined.subarray(0, n);
            const rest = joined.subarray(n);
            pending = rest.length > 0 ? [rest] : [];
            queued = rest.length;
            await out.write(chunk);
            written += chunk.length;
            return chunk;
          };
          for await (const piece of encryptStream(counted, key)) {
            pending.push(piece);
            queued += piece.length;
            while (queued >= CHUNK) yield { chunk: await emit(CHUNK) };
          }
          if (queued > 0) yield { chunk: await emit(queued) };
          if (plain !== plainSize || written !== size) {
            throw new TrustplaneError("FAILED_PRECONDITION", "SOURCE_SIZE_CHANGED", `the source had ${plain} bytes, not the ${plainSize} declared; pass the right size (or none)`);
          }
        } finally {
          await out.close();
        }
      } else {
        for await (const chunk of fileChunks(file, size, CHUNK, (bytes) => opts.onProgress?.({ phase: "upload", bytes, total: size }))) yield { chunk };
      }
    })(),
  );
  return res.object!;
}
