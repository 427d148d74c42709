// Groups the envelope writer's output (a header, then ciphertext pieces and 16-byte tags) into
// messages of about `size` bytes for a streamed privileged result (seed 002), so a dump is not
// sent as thousands of tiny gRPC messages nor as one that exceeds the receiver's limit.
export async function* coalesce(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let length = 0;
  for await (const piece of source) {
    pending.push(piece);
    length += piece.length;
    if (length >= size) {
      yield Buffer.concat(pending, length);
      pending = [];
      length = 0;
    }
  }
  if (length > 0) yield Buffer.concat(pending, length);
}
