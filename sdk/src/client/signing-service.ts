// Wraps a generated grpc-js service definition so that the bytes the SDK hashes are the
// bytes on the wire: a pre-encoded Uint8Array passes through untouched, anything else is
// canonical-encoded. Implements "Those exact bytes are what goes on the wire".
import type * as grpc from "@grpc/grpc-js";
import { canonicalForEncode } from "../auth/canonical.js";

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Marks serializers that pass pre-encoded bytes through, so the interceptor may forward bytes. */
export const PASSES_BYTES: unique symbol = Symbol("trustplane.passesBytes");

export function passesBytes(serialize: unknown): boolean {
  return typeof serialize === "function" && (serialize as unknown as Record<symbol, unknown>)[PASSES_BYTES] === true;
}

/** Request serializer: bytes pass through; messages get canonical (map-sorted) encoding. */
export function canonicalSerializer<T>(serialize: (value: T) => Buffer): (value: T | Uint8Array) => Buffer {
  const fn = (value: T | Uint8Array) => (value instanceof Uint8Array ? toBuffer(value) : serialize(canonicalForEncode(value as T)));
  return Object.assign(fn, { [PASSES_BYTES]: true as const });
}

export function signingServiceDefinition<S extends grpc.ServiceDefinition>(service: S): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service) as [string, grpc.MethodDefinition<unknown, unknown>][]) {
    out[name] = { ...def, requestSerialize: canonicalSerializer(def.requestSerialize) };
  }
  return out as unknown as S;
}
