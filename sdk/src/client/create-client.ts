// The SDK's typed, signing gRPC client over a generated service definition: promise-based
// unary calls, async-iterable streams, TrustplaneError on failure. Implements the SDK side
// of "One signing primitive": every call goes through the signing interceptor, client
// streams carry the digest of the whole stream.
import * as grpc from "@grpc/grpc-js";
import { StreamDigest } from "../auth/stream-digest.js";
import type { SigningKey } from "../auth/signing-key.js";
import { TrustplaneError } from "../errors.js";
import { toTrustplaneError } from "./client-error.js";
import { STREAM_DIGEST_OPTION, addCallSignature, createSigningInterceptor, type SigningInterceptorOptions } from "./signing-interceptor.js";
import { signingServiceDefinition } from "./signing-service.js";
import { REQUEST_TYPES } from "../gen/request-types.js";

type Req<M> = M extends grpc.MethodDefinition<infer R, any> ? R : never;

type Builtin = Uint8Array | string | number | boolean | bigint | undefined | null;
/** Like Partial, but nested messages may be partial too (filled by the generated fromPartial). */
export type DeepPartial<T> = T extends Builtin
  ? T
  : T extends Map<infer K, infer V>
    ? Map<K, DeepPartial<V>>
    : T extends Array<infer U>
      ? Array<DeepPartial<U>>
      : { [K in keyof T]?: DeepPartial<T[K]> };
type Res<M> = M extends grpc.MethodDefinition<any, infer R> ? R : never;

export interface CallOpts {
  deadlineMs?: number;
}

export type ServerStream<T> = AsyncIterable<T> & { cancel(): void };

export interface BidiStream<Q, R> extends AsyncIterable<R> {
  send(message: DeepPartial<Q>): void;
  end(): void;
  cancel(): void;
}

export type ClientStreamInput<Q> = Iterable<DeepPartial<Q>> | (() => AsyncIterable<DeepPartial<Q>>);

export type SignedMethod<M> = M extends { requestStream: false; responseStream: false }
  ? (req: DeepPartial<Req<M>>, opts?: CallOpts) => Promise<Res<M>>
  : M extends { requestStream: false; responseStream: true }
    ? (req: DeepPartial<Req<M>>, opts?: CallOpts) => ServerStream<Res<M>>
    : M extends { requestStream: true; responseStream: false }
      ? (messages: ClientStreamInput<Req<M>>, opts?: CallOpts) => Promise<Res<M>>
      : (first: DeepPartial<Req<M>>, opts?: CallOpts) => BidiStream<Req<M>, Res<M>>;

export type SignedClient<S> = { [K in keyof S]: SignedMethod<S[K]> } & { close(): void };

/** A generated message codec (ts-proto): enough to build a full message from a partial one. */
interface PartialCodec {
  fromPartial(object: unknown): unknown;
}

export interface CreateClientOptions {
  key: SigningKey;
  certificate?: Uint8Array;
  targetHost?: string;
  credentials?: grpc.ChannelCredentials;
  channelOptions?: grpc.ChannelOptions;
  /**
   * The generated module holding the request codecs (`import * as authV1 from ".../service.js"`).
   * With it, partial requests may leave nested messages partial too; without it, fields left
   * out at the top level get their defaults and nested messages must be given whole.
   */
  types?: Record<string, unknown>;
  now?: () => number;
}

function methodName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * Completes a partial request. Order: a codec on the method definition (`requestType`), the
 * generated `<Method>Request` codec from `types` (buf STANDARD lint guarantees that name) or
 * from the generated REQUEST_TYPES registry, else the top-level defaults (decoding zero
 * bytes) overlaid with the given fields.
 */
function completer(def: grpc.MethodDefinition<unknown, unknown>, types: Record<string, unknown> | undefined): (p: unknown) => unknown {
  const onDef = (def as unknown as { requestType?: Partial<PartialCodec> }).requestType;
  if (typeof onDef?.fromPartial === "function") return (p) => onDef.fromPartial!(p);
  const named = (types?.[`${methodName(def.path)}Request`] ?? REQUEST_TYPES[def.path]) as Partial<PartialCodec> | undefined;
  if (typeof named?.fromPartial === "function") return (p) => named.fromPartial!(p);
  return (p) => {
    const base = def.requestDeserialize(Buffer.alloc(0)) as Record<string, unknown>;
    for (const [k, v] of Object.entries((p ?? {}) as Record<string, unknown>)) if (v !== undefined) base[k] = v;
    return base;
  };
}

/**
 * Creates a client whose every call is signed with `opts.key`.
 *
 * @example
 * const key = generateSigningKey();
 * const auth = createClient(AuthServiceService, "127.0.0.1:7443", { key });
 * const res = await auth.echo({ message: "hi" });
 * console.log(res.principal, res.keyId);
 * auth.close();
 */
export function createClient<S extends grpc.ServiceDefinition>(service: S, address: string, opts: CreateClientOptions): SignedClient<S> {
  const wrapped = signingServiceDefinition(service);
  const Ctor = grpc.makeGenericClientConstructor(wrapped as grpc.ServiceDefinition, "TrustplaneSignedClient");
  const signing: SigningInterceptorOptions = { key: opts.key, certificate: opts.certificate, targetHost: opts.targetHost, now: opts.now };
  const interceptor = createSigningInterceptor(signing);
  // Unary calls are signed here, over the bytes just encoded, with no interceptor layer in
  // their path (see auth.signed-unary-throughput in BENCHMARKS.md); streaming calls get the
  // signing interceptor per call, as it must see their first message.
  const channelInterceptors = (opts.channelOptions?.interceptors ?? []) as grpc.Interceptor[];
  const client = new Ctor(address, opts.credentials ?? grpc.credentials.createInsecure(), { ...opts.channelOptions, interceptors: channelInterceptors });
  const streaming = [...channelInterceptors, interceptor];
  const out: Record<string, unknown> = { close: () => client.close() };
  for (const [name, def] of Object.entries(wrapped) as [string, grpc.MethodDefinition<unknown, unknown>][]) {
    const complete = completer(def, opts.types);
    const encode = (partial: unknown): Buffer => {
      let message: unknown;
      try {
        message = complete(partial);
        return def.requestSerialize(message);
      } catch (e) {
        throw new TrustplaneError("INVALID_ARGUMENT", "REQUEST_INVALID", `${methodName(def.path)}: cannot encode the request (${(e as Error).message}); pass nested messages whole or set createClient's "types" option`);
      }
    };
    const unaryOptions = (o: CallOpts | undefined): grpc.CallOptions => (o?.deadlineMs !== undefined ? { deadline: Date.now() + o.deadlineMs } : {});
    const callOptions = (o: CallOpts | undefined, extra?: Record<string, unknown>): grpc.CallOptions => ({ ...unaryOptions(o), interceptors: streaming, ...extra });
    const ser = (b: Buffer) => b;
    const deser = def.responseDeserialize;
    if (!def.requestStream && !def.responseStream) {
      out[name] = (req: unknown, o?: CallOpts) =>
        new Promise((resolve, reject) => {
          const bytes = encode(req);
          client.makeUnaryRequest(def.path, ser, deser, bytes, addCallSignature(new grpc.Metadata(), def.path, bytes, signing), unaryOptions(o), (err, res) =>
            err ? reject(toTrustplaneError(err)) : resolve(res),
          );
        });
    } else if (!def.requestStream) {
      out[name] = (req: unknown, o?: CallOpts): ServerStream<unknown> => {
        const call = client.makeServerStreamRequest(def.path, ser, deser, encode(req), new grpc.Metadata(), callOptions(o));
        return { [Symbol.asyncIterator]: () => readStream(call), cancel: () => call.cancel() };
      };
    } else if (!def.responseStream) {
      out[name] = async (messages: ClientStreamInput<unknown>, o?: CallOpts) => {
        let source: () => AsyncIterable<Buffer> | Iterable<Buffer>;
        const digest = new StreamDigest();
        if (typeof messages === "function") {
          // Two passes: the digest of the whole stream must be signed before the first message leaves.
          for await (const m of messages()) digest.update(encode(m));
          source = async function* () {
            for await (const m of messages()) yield encode(m);
          };
        } else {
          const encoded = [...messages].map(encode);
          for (const b of encoded) digest.update(b);
          source = () => encoded;
        }
        return await new Promise((resolve, reject) => {
          const call = client.makeClientStreamRequest(
            def.path,
            ser,
            deser,
            new grpc.Metadata(),
            callOptions(o, { [STREAM_DIGEST_OPTION]: digest.digest() }),
            (err, res) => (err ? reject(toTrustplaneError(err)) : resolve(res)),
          );
          void (async () => {
            try {
              for await (const b of source()) {
                if (!call.write(b)) await new Promise((r) => call.once("drain", r));
              }
              call.end();
            } catch (e) {
              call.cancel();
              reject(e);
            }
          })();
        });
      };
    } else {
      out[name] = (first: unknown, o?: CallOpts): BidiStream<unknown, unknown> => {
        const call = client.makeBidiStreamRequest(def.path, ser, deser, new grpc.Metadata(), callOptions(o));
        call.write(encode(first));
        return {
          send: (m) => void call.write(encode(m)),
          end: () => call.end(),
          cancel: () => call.cancel(),
          [Symbol.asyncIterator]: () => readStream(call),
        };
      };
    }
  }
  return out as SignedClient<S>;
}

async function* readStream(call: AsyncIterable<unknown>): AsyncGenerator<unknown> {
  try {
    for await (const m of call) yield m;
  } catch (e) {
    throw toTrustplaneError(e);
  }
}
