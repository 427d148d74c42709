// What a privileged operation hands back to the executor (seed 002): the typed fields of the
// host-signed result and, for large outputs (memory dumps), a stream the executor seals with
// the envelope format as it reads it, announced in the signed header and digested in the trailer.
import type { PrivilegedResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";

export interface StreamedOutput {
  /** Plaintext bytes the stream will yield (announced in the signed header). */
  size: number;
  chunks(): AsyncIterable<Uint8Array>;
  /** Releases what backs the stream (the dump file); called once, read or not. */
  dispose(): Promise<void>;
}

export type OperationOutput = Partial<Omit<PrivilegedResult, "requestId" | "hostId" | "requestDigest" | "executedAtMs" | "streamSha256" | "streamSize">> & {
  stream?: StreamedOutput;
};
