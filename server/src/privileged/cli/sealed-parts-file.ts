// A streamed privileged result as the technician carries it (seed 002): the SubmitStream parts
// (sealed header, envelope chunks, sealed trailer) written to a file as they arrive, each as a
// 4-byte big-endian length and the encoded part, and read back the same way to be opened.
import { createReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { SubmitStreamResponse } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";

/** Parts are at most ~1 MiB of envelope bytes; anything far larger is not such a file. */
const MAX_PART = 8 * 1024 * 1024;

export class SealedPartsWriter {
  private constructor(private readonly fh: FileHandle) {}

  static async create(file: string): Promise<SealedPartsWriter> {
    return new SealedPartsWriter(await open(file, "wx", 0o600));
  }

  async write(part: SubmitStreamResponse): Promise<void> {
    const body = SubmitStreamResponse.encode(part).finish();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    await this.fh.write(Buffer.concat([head, body]));
  }

  async close(): Promise<void> {
    await this.fh.sync();
    await this.fh.close();
  }
}

export async function* readSealedParts(file: string): AsyncGenerator<SubmitStreamResponse> {
  let buffered: Buffer = Buffer.alloc(0);
  const bad = (m: string) => new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `${file}: not a sealed parts file (${m})`);
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    buffered = buffered.length ? Buffer.concat([buffered, chunk as Buffer]) : (chunk as Buffer);
    while (buffered.length >= 4) {
      const n = buffered.readUInt32BE(0);
      if (n > MAX_PART) throw bad(`a part of ${n} bytes`);
      if (buffered.length < 4 + n) break;
      yield SubmitStreamResponse.decode(buffered.subarray(4, 4 + n));
      buffered = buffered.subarray(4 + n);
    }
  }
  if (buffered.length) throw bad("it ends inside a part");
}
