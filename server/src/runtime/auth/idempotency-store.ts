// Idempotency of mutating unary RPCs under the client's request_id: the first response is
// kept with the digest of the request bytes; a retry with the same bytes gets it back, a
// different request under the same id is refused. Implements the architecture's
// "Every mutating RPC is idempotent under its request_id". Storage provides a durable store.

export interface IdempotencyRecord {
  requestDigest: Uint8Array;
  response: Uint8Array;
}

export interface IdempotencyStore {
  get(scope: string, requestId: string): Promise<IdempotencyRecord | undefined>;
  put(scope: string, requestId: string, requestDigest: Uint8Array, response: Uint8Array): Promise<void>;
}

/** For tests and single-process dev runs; forgets everything on restart. */
export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly records = new Map<string, IdempotencyRecord>();

  async get(scope: string, requestId: string): Promise<IdempotencyRecord | undefined> {
    return this.records.get(JSON.stringify([scope, requestId]));
  }

  async put(scope: string, requestId: string, requestDigest: Uint8Array, response: Uint8Array): Promise<void> {
    this.records.set(JSON.stringify([scope, requestId]), { requestDigest, response });
  }
}
