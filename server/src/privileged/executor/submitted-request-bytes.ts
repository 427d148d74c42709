// The exact bytes of the request envelope inside a received SubmitRequest/SubmitStreamRequest
// (seed 002): the host signs and seals its result to the digest of what it received, never to
// a re-encoding of it, so the requester's digest over the bytes it sent always matches.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { invalidArgument } from "../../../../sdk/src/errors.js";

/** Field numbers shared by SubmitRequest and SubmitStreamRequest. */
const ENVELOPE_FIELD = 2;
const SEALED_FIELD = 3;

export interface SubmittedRequestBytes {
  envelope?: Uint8Array;
  sealed?: Uint8Array;
}

/**
 * Slices the envelope (or sealed request) field out of the raw request. Protobuf merges a
 * repeated singular message field, so a request carrying it twice would decode to something
 * neither copy says; such a request is refused rather than guessed at.
 */
export function submittedRequestBytes(raw: Uint8Array): SubmittedRequestBytes {
  const reader = new BinaryReader(raw);
  const out: SubmittedRequestBytes = {};
  let count = 0;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if ((field === ENVELOPE_FIELD || field === SEALED_FIELD) && wireType === WireType.LengthDelimited) {
      count++;
      const bytes = reader.bytes();
      if (field === ENVELOPE_FIELD) out.envelope = bytes;
      else out.sealed = bytes;
    } else {
      reader.skip(wireType, field);
    }
  }
  if (count > 1) throw invalidArgument("request", "give the signed envelope or the sealed request exactly once");
  return out;
}
