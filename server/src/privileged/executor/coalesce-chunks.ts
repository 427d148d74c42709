// Groups the envelope writer's output (a header, then per segment its ciphertext and a 16-byte
// tag) into the chunk messages of a streamed privileged result (seed 002). Large pieces go out
// as they are (copying a 1 MiB segment again would cost as much as a tenth of sealing it);
// only small ones are merged, so a dump is not sent as thousands of tiny gRPC messages.
export async function* coalesce(source: AsyncIterable<Uint8Array>, small: number): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let length = 0;
  const flush = () => {
    const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, length);
    pending = [];
    length = 0;
    return out;
  };
  for await (const piece of source) {
    if (piece.length >= small) {
      if (length > 0) yield flush();
      yield piece;
      continue;
    }
    pending.push(piece);
    length += piece.length;
    if (length >= small) yield flush();
  }
  if (length > 0) yield flush();
}
