// Wraps a generated grpc-js service definition so that the bytes the SDK hashes are the
// bytes on the wire: a pre-encoded Uint8Array passes through untouched, anything else is
// canonical-encoded. Implements "Those exact bytes are what goes on the wire".
import type * as grpc from "@grpc/grpc-js";
import { canonicalize } from "../auth/canonical.js";

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Request serializer: bytes pass through; messages get canonical (map-sorted) encoding. */
export function canonicalSerializer<T>(serialize: (value: T) => Buffer): (value: T | Uint8Array) => Buffer {
  return (value) => (value instanceof Uint8Array ? toBuffer(value) : serialize(canonicalize(value as T)));
}

export function signingServiceDefinition<S extends grpc.ServiceDefinition>(service: S): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service) as [string, grpc.MethodDefinition<unknown, unknown>][]) {
    out[name] = { ...def, requestSerialize: canonicalSerializer(def.requestSerialize) };
  }
  return out as unknown as S;
}
