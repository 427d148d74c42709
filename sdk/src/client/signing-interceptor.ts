// grpc-js client interceptor that signs every call (unary and streaming) with a CallStatement
// sent as metadata. Implements the architecture's "Call signatures": the first message is
// canonical-encoded ONCE, its SHA-256 goes into the signed statement, and those same bytes
// are forwarded to the wire (service definitions wrapped by signingServiceDefinition).
import * as grpc from "@grpc/grpc-js";
import {
  CERTIFICATE_METADATA,
  KEY_ID_METADATA,
  SIGNATURE_METADATA,
  STATEMENT_METADATA,
  signCall,
} from "../auth/call-statement.js";
import { canonicalForEncode } from "../auth/canonical.js";
import type { SigningKey } from "../auth/signing-key.js";
import { passesBytes } from "./signing-service.js";

/** Call option carrying a precomputed stream digest (client-streaming calls). */
export const STREAM_DIGEST_OPTION = "trustplaneStreamDigest";

export interface SigningInterceptorOptions {
  key: SigningKey;
  /** Certificate envelope for `key` (servers that know the CA but not the key). */
  certificate?: Uint8Array;
  /** Host id the calls are bound to; empty/undefined for the control plane. */
  targetHost?: string;
  now?: () => number;
}

/** Adds the call signature over `requestBytes` (the exact wire bytes) to `metadata`. */
export function addCallSignature(metadata: grpc.Metadata, method: string, requestBytes: Uint8Array, opts: SigningInterceptorOptions, streamDigest?: Uint8Array): grpc.Metadata {
  const signed = signCall({
    method,
    requestBytes,
    streamDigest,
    key: opts.key,
    certificate: opts.certificate,
    targetHost: opts.targetHost,
    nowMs: opts.now?.(),
  });
  metadata.set(STATEMENT_METADATA, Buffer.from(signed.statement.buffer, signed.statement.byteOffset, signed.statement.byteLength));
  metadata.set(SIGNATURE_METADATA, Buffer.from(signed.signature.buffer, signed.signature.byteOffset, signed.signature.byteLength));
  metadata.set(KEY_ID_METADATA, signed.keyId);
  if (signed.certificate) metadata.set(CERTIFICATE_METADATA, Buffer.from(signed.certificate));
  return metadata;
}

export function createSigningInterceptor(opts: SigningInterceptorOptions): grpc.Interceptor {
  return (options, nextCall) => {
    const def = options.method_definition;
    const streamDigest = (options as unknown as Record<string, unknown>)[STREAM_DIGEST_OPTION] as Uint8Array | undefined;
    let pendingStart: { metadata: grpc.Metadata; listener: grpc.Listener; next: (md: grpc.Metadata, l: grpc.Listener) => void } | undefined;

    // Metadata can only be sent once the first message is known, so start() is held back
    // until the first sendMessage (or halfClose, for an empty client stream).
    const startSigned = (requestBytes: Uint8Array) => {
      const p = pendingStart!;
      pendingStart = undefined;
      p.next(addCallSignature(p.metadata, def.path, requestBytes, opts, streamDigest), p.listener);
    };

    const requester: grpc.Requester = {
      start(metadata, listener, next) {
        pendingStart = { metadata, listener, next };
      },
      sendMessage(message, next) {
        if (!pendingStart) return next(message);
        if (message instanceof Uint8Array) {
          startSigned(message);
          return next(message);
        }
        if (passesBytes(def.requestSerialize)) {
          // Encode once; the wrapped serializer sends these very bytes.
          const bytes = def.requestSerialize(message);
          startSigned(bytes);
          return next(bytes);
        }
        // A plain generated client re-serializes whatever we forward, so forward the message
        // itself: ts-proto encoding of an unchanged object is deterministic, so the wire bytes
        // are the hashed bytes (and with map entries sorted first they are canonical too).
        const canonical = canonicalForEncode(message);
        startSigned(def.requestSerialize(canonical));
        next(canonical);
      },
      halfClose(next) {
        if (pendingStart) startSigned(new Uint8Array(0));
        next();
      },
    };
    return new grpc.InterceptingCall(nextCall(options), requester);
  };
}
