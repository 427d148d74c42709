// Registers a generated service on a grpc-js server behind the call verifier. The server
// deserializer keeps the RAW bytes; every call is verified on them and only then decoded.
// Implements "One auth interceptor for every service", stream digests checked before the
// handler can commit, idempotency by request_id, UNIMPLEMENTED for areas not landed yet.
import * as grpc from "@grpc/grpc-js";
import { createHash, randomUUID } from "node:crypto";
import { StreamDigest } from "../../../../sdk/src/auth/stream-digest.js";
import { TrustplaneError, statusName } from "../../../../sdk/src/errors.js";
import { CallStatement } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import type { Logger } from "../logger.js";
import type { Caller } from "./caller.js";
import { CallRejectedError, type CallVerifier } from "./call-verifier.js";
import { toServiceError } from "./error-status.js";
import type { IdempotencyStore } from "./idempotency-store.js";

/** What a generated method definition looks like (ts-proto `outputServices=grpc-js`). */
export interface MethodDef<Req = any, Res = any> {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (value: Req) => Buffer;
  requestDeserialize: (bytes: Buffer) => Req;
  responseSerialize: (value: Res) => Buffer;
  responseDeserialize: (bytes: Buffer) => Res;
}

export type RequestOf<M> = M extends { requestDeserialize: (bytes: Buffer) => infer R } ? R : never;
export type ResponseOf<M> = M extends { responseSerialize: (value: infer R) => Buffer } ? R : never;

export interface CallContext {
  caller: Caller;
  requestId: string;
  method: string;
  /** Child logger carrying requestId, method and principal. */
  logger: Logger;
  metadata: grpc.Metadata;
  /** Aborted when the client cancels or the deadline passes. */
  signal: AbortSignal;
}

export type HandlerFor<M> = M extends { requestStream: false; responseStream: false }
  ? (req: RequestOf<M>, ctx: CallContext) => Promise<ResponseOf<M>>
  : M extends { requestStream: false; responseStream: true }
    ? (req: RequestOf<M>, ctx: CallContext) => AsyncIterable<ResponseOf<M>>
    : M extends { requestStream: true; responseStream: false }
      ? (stream: AsyncIterable<RequestOf<M>>, ctx: CallContext) => Promise<ResponseOf<M>>
      : (stream: AsyncIterable<RequestOf<M>>, ctx: CallContext) => AsyncIterable<ResponseOf<M>>;

export type Handlers<S> = { [K in keyof S]: HandlerFor<S[K]> };

export interface DeniedCall {
  method: string;
  reason: string;
  principal?: string;
  keyId?: string;
  requestId: string;
}

export interface BindRuntime {
  verifier: CallVerifier;
  logger: Logger;
  /** Methods that authenticate themselves (e.g. JoinHost with a join token): no call signature. */
  publicMethods?: Set<string>;
  idempotency?: IdempotencyStore;
  onDenied?: (e: DeniedCall) => void | Promise<void>;
}

/** Read-only methods never go through the idempotency store. */
const NOT_IDEMPOTENT_PREFIXES = ["Get", "List", "Watch", "Echo", "WhoAmI"];

/** "/trustplane.vm.v1.VmService/CreateVm" -> "vm". */
export function areaOf(path: string): string {
  const pkg = path.split("/")[1] ?? "";
  const parts = pkg.split(".");
  return parts[0] === "trustplane" && parts.length >= 3 ? parts[1]! : pkg;
}

function methodName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function anonymousCaller(method: string): Caller {
  return { principal: "", keyId: "", roles: [], statement: CallStatement.fromPartial({ method }) };
}

function decodeWith<M extends MethodDef>(def: M, raw: Buffer): RequestOf<M> {
  try {
    return def.requestDeserialize(raw);
  } catch (e) {
    throw new TrustplaneError("INVALID_ARGUMENT", "MALFORMED_REQUEST", `the request does not parse as ${methodName(def.path)}'s request: ${(e as Error).message}`);
  }
}

function requestIdOf(req: unknown): string | undefined {
  const id = (req as { requestId?: unknown } | null)?.requestId;
  return typeof id === "string" && id !== "" ? id : undefined;
}

/** Tracks one call for the per-call log line and the denial hook. */
class CallRecord {
  readonly started = performance.now();
  requestId: string = randomUUID();
  principal?: string;
  keyId?: string;
  private controller?: AbortController;
  private cancelled = false;
  private finished = false;

  /** Aborted when the client cancels or the deadline passes. Built on first use: creating
   * (and aborting) a controller for every call cost a DOMException with a stack each time. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.cancelled) this.controller.abort();
    }
    return this.controller.signal;
  }

  /** grpc-js reports "cancelled" for calls that already completed too; only live calls abort. */
  cancel(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.controller?.abort();
  }

  constructor(
    readonly method: string,
    private readonly runtime: BindRuntime,
  ) {}

  context(caller: Caller, metadata: grpc.Metadata): CallContext {
    const rec = this;
    let logger: Logger | undefined;
    return {
      caller,
      requestId: this.requestId,
      method: this.method,
      // Built on first use: most handlers never log, and a pino child costs a serialisation.
      get logger() {
        return (logger ??= rec.runtime.logger.child({ requestId: rec.requestId, method: rec.method, principal: caller.principal }));
      },
      metadata,
      get signal() {
        return rec.signal;
      },
    };
  }

  /** Logs the outcome and returns the status to send (undefined on success). */
  async finish(err: unknown): Promise<ReturnType<typeof toServiceError> | undefined> {
    this.finished = true;
    const status = err === undefined ? undefined : toServiceError(err, this.requestId);
    const line = {
      method: this.method,
      requestId: this.requestId,
      principal: this.principal,
      keyId: this.keyId,
      status: status ? statusName(status.code) : "OK",
      ms: Math.round((performance.now() - this.started) * 10) / 10,
    };
    if (err !== undefined && !(err instanceof TrustplaneError)) {
      this.runtime.logger.error({ ...line, err }, "call failed");
    } else {
      this.runtime.logger.info(
        err instanceof TrustplaneError ? { ...line, reason: err.reason } : line,
        "call",
      );
    }
    if (err instanceof CallRejectedError && this.runtime.onDenied) {
      try {
        await this.runtime.onDenied({
          method: this.method,
          reason: err.reason,
          principal: err.principal,
          keyId: err.keyId,
          requestId: this.requestId,
        });
      } catch (hookErr) {
        this.runtime.logger.error({ method: this.method, requestId: this.requestId, err: hookErr }, "denial hook failed");
      }
    }
    return status;
  }
}

/**
 * Registers every method of `service`; methods without a handler answer UNIMPLEMENTED naming
 * the area. Handlers receive decoded requests only after the call verified.
 */
const MESSAGE_AUTHENTICATED = Symbol("trustplane.messageAuthenticated");

/**
 * Marks a bidirectional-streaming handler that authenticates every message after the first
 * itself (e.g. the job session's sealed frames). The call signature covers a bidi stream's
 * first message only — its later messages cannot be signed up front — so bindService refuses
 * a bidi handler without this mark rather than let unauthenticated messages through.
 *
 * ```ts
 * openSession: messageAuthenticated((stream, ctx) => sessions.open(stream, ctx)),
 * ```
 */
export function messageAuthenticated<F extends (...args: any[]) => any>(handler: F): F {
  return Object.assign(handler, { [MESSAGE_AUTHENTICATED]: true });
}

export function bindService<S extends Record<string, MethodDef>>(
  server: grpc.Server,
  service: S,
  handlers: Partial<Handlers<S>>,
  runtime: BindRuntime,
): void {
  const rawDefs: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const impls: grpc.UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(service) as [string, MethodDef][]) {
    rawDefs[name] = {
      ...def,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    } as grpc.MethodDefinition<Buffer, Buffer>;
    const handler = (handlers as Record<string, ((...args: any[]) => any) | undefined>)[name];
    if (handler && def.requestStream && def.responseStream && !(handler as unknown as Record<symbol, unknown>)[MESSAGE_AUTHENTICATED]) {
      throw new TrustplaneError(
        "FAILED_PRECONDITION",
        "STREAM_NOT_AUTHENTICATED",
        `${def.path} is bidirectional: the call signature covers its first message only, so its handler must authenticate the later ones and be wrapped in messageAuthenticated()`,
      );
    }
    impls[name] = makeImpl(def, handler, runtime);
  }
  server.addService(rawDefs as grpc.ServiceDefinition, impls);
}

function unimplemented(path: string): TrustplaneError {
  return new TrustplaneError("UNIMPLEMENTED", "AREA_NOT_IMPLEMENTED", `${methodName(path)}: the ${areaOf(path)} area is not implemented yet`);
}

async function authenticate(def: MethodDef, runtime: BindRuntime, rec: CallRecord, metadata: grpc.Metadata, first: Buffer): Promise<Caller> {
  if (runtime.publicMethods?.has(def.path)) return anonymousCaller(def.path);
  try {
    const caller = await runtime.verifier.verify(def.path, metadata, first);
    rec.principal = caller.principal;
    rec.keyId = caller.keyId;
    return caller;
  } catch (e) {
    if (e instanceof CallRejectedError) {
      rec.keyId = e.keyId;
      rec.principal = e.principal;
    }
    throw e;
  }
}

function makeImpl(def: MethodDef, handler: ((...args: any[]) => any) | undefined, runtime: BindRuntime): grpc.UntypedHandleCall {
  if (!def.requestStream) {
    if (!def.responseStream) {
      return (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        const rec = new CallRecord(def.path, runtime);
        call.on("cancelled", () => rec.cancel());
        void (async () => {
          let response: Buffer | undefined;
          let error: unknown;
          try {
            response = await runUnary(def, handler, runtime, rec, call);
          } catch (e) {
            error = e;
          }
          const status = await rec.finish(error);
          if (status) callback(status);
          else callback(null, response);
        })();
      };
    }
    return (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const rec = new CallRecord(def.path, runtime);
      call.on("cancelled", () => rec.cancel());
      void (async () => {
        let error: unknown;
        try {
          const caller = await authenticate(def, runtime, rec, call.metadata, call.request);
          const req = decodeWith(def, call.request);
          rec.requestId = requestIdOf(req) ?? rec.requestId;
          if (!handler) throw unimplemented(def.path);
          await writeAll(call, def, handler(req, rec.context(caller, call.metadata)), rec);
        } catch (e) {
          error = e;
        }
        const status = await rec.finish(error);
        if (status) call.emit("error", status);
        else call.end();
      })();
    };
  }
  const streamImpl = (call: grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>, done: (status: ReturnType<typeof toServiceError> | undefined, response?: Buffer) => void) => {
    const rec = new CallRecord(def.path, runtime);
    call.on("cancelled", () => rec.cancel());
    void (async () => {
      let error: unknown;
      let response: Buffer | undefined;
      try {
        const iterator = readMessages(call);
        const firstResult = await iterator.next();
        const first: Buffer | undefined = firstResult.done ? undefined : firstResult.value;
        const caller = await authenticate(def, runtime, rec, call.metadata, first ?? Buffer.alloc(0));
        const expectedStreamDigest = caller.statement.streamDigest;
        // A client stream's later messages are only bound by the stream digest; without
        // one they could be swapped in transit, so client streams must carry it.
        if (!def.responseStream && expectedStreamDigest.length === 0 && !runtime.publicMethods?.has(def.path)) {
          throw new CallRejectedError("UNAUTHENTICATED", "DIGEST_MISMATCH", "client-streaming calls must carry stream_digest in their call statement", rec.keyId, rec.principal);
        }
        const firstReq = first ? decodeWith(def, first) : undefined;
        rec.requestId = requestIdOf(firstReq) ?? rec.requestId;
        if (!handler) throw unimplemented(def.path);
        const requests = verifiedStream(def, first, firstReq, iterator, expectedStreamDigest, caller);
        const result = handler(requests, rec.context(caller, call.metadata));
        if (def.responseStream) await writeAll(call as grpc.ServerDuplexStream<Buffer, Buffer>, def, result, rec);
        else response = def.responseSerialize(await result);
      } catch (e) {
        error = e;
      }
      done(await rec.finish(error), response);
    })();
  };
  if (!def.responseStream) {
    return (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
      streamImpl(call, (status, response) => (status ? callback(status) : callback(null, response)));
  }
  return (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
    streamImpl(call, (status) => (status ? call.emit("error", status) : call.end()));
}

async function runUnary(
  def: MethodDef,
  handler: ((...args: any[]) => any) | undefined,
  runtime: BindRuntime,
  rec: CallRecord,
  call: grpc.ServerUnaryCall<Buffer, Buffer>,
): Promise<Buffer> {
  const raw = call.request;
  const caller = await authenticate(def, runtime, rec, call.metadata, raw);
  const req = decodeWith(def, raw);
  const requestId = requestIdOf(req);
  if (requestId) rec.requestId = requestId;
  if (!handler) throw unimplemented(def.path);
  const ctx = rec.context(caller, call.metadata);
  const name = methodName(def.path);
  const store = runtime.idempotency;
  if (!store || !requestId || NOT_IDEMPOTENT_PREFIXES.some((p) => name.startsWith(p))) {
    return def.responseSerialize(await handler(req, ctx));
  }
  // Scope by principal so one principal's request ids never collide with another's.
  // A space never occurs in principal names or method paths (and, unlike NUL, PostgreSQL TEXT holds it).
  const scope = `${caller.principal} ${def.path}`;
  const digest = createHash("sha256").update(raw).digest();
  const previous = await store.get(scope, requestId);
  if (previous) {
    if (!digest.equals(previous.requestDigest)) {
      throw new TrustplaneError(
        "ALREADY_EXISTS",
        "REQUEST_ID_REUSED",
        `request_id ${JSON.stringify(requestId)} was already used for a different ${name} request; use a new request_id`,
        "request_id",
      );
    }
    ctx.logger.debug("idempotent replay");
    return Buffer.from(previous.response);
  }
  const response = def.responseSerialize(await handler(req, ctx));
  await store.put(scope, requestId, digest, response);
  return response;
}

/**
 * The handler's view of a request stream: decoded messages, and at the client's half-close
 * a stream digest check that THROWS instead of ending normally when the stream was altered,
 * so a handler that commits after its loop never commits a tampered stream.
 */
async function* verifiedStream(
  def: MethodDef,
  first: Buffer | undefined,
  firstReq: unknown,
  rest: AsyncIterator<Buffer>,
  expected: Uint8Array,
  caller: Caller,
): AsyncGenerator<unknown, void, undefined> {
  const digest = new StreamDigest();
  if (first) {
    digest.update(first);
    yield firstReq;
    for (;;) {
      const next = await rest.next();
      if (next.done) break;
      digest.update(next.value);
      yield decodeWith(def, next.value);
    }
  }
  if (expected.length > 0 && !Buffer.from(digest.digest()).equals(expected)) {
    // A CallRejectedError, so the denial hook (audit) records the tampered stream too.
    throw new CallRejectedError("UNAUTHENTICATED", "DIGEST_MISMATCH", "the request stream received is not the stream that was signed", caller.keyId, caller.principal);
  }
}

async function writeAll(
  call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>,
  def: MethodDef,
  responses: AsyncIterable<unknown>,
  rec: CallRecord,
): Promise<void> {
  for await (const res of responses) {
    if (rec.signal.aborted) return;
    if (!call.write(def.responseSerialize(res))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          call.off("drain", done);
          rec.signal.removeEventListener("abort", done);
          resolve();
        };
        call.on("drain", done);
        rec.signal.addEventListener("abort", done);
      });
    }
  }
}

/**
 * Reads a grpc-js server request stream by events. Not the stream's own async iterator:
 * that one destroys the call when the client half-closes, and a destroyed call can no
 * longer send its responses or status.
 */
function readMessages(stream: grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>): AsyncIterator<Buffer> {
  const buffered: Buffer[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  stream.on("data", (b: Buffer) => {
    buffered.push(b);
    if (buffered.length >= 16) stream.pause();
    notify();
  });
  stream.on("end", () => {
    ended = true;
    notify();
  });
  stream.on("error", (e: unknown) => {
    failure = e;
    notify();
  });
  stream.on("cancelled", () => {
    failure ??= new TrustplaneError("CANCELLED", "CANCELLED", "the client cancelled the call");
    notify();
  });
  return {
    async next(): Promise<IteratorResult<Buffer>> {
      for (;;) {
        const value = buffered.shift();
        if (value) {
          if (buffered.length < 4) stream.resume();
          return { value, done: false };
        }
        if (failure !== undefined) throw failure;
        if (ended) return { value: undefined, done: true };
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}
