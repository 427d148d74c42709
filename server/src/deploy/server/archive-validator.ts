// The trusted side's view of validation: one call that hands an archive in quarantine to an
// untrusted, sandboxed worker and returns only identifiers and size-capped results (the
// WorkerPool in ../sandbox implements it). The server never parses the archive itself.
export interface Aac {
  account: string;
  application: string;
  component: string;
}

export interface ValidationProgress {
  entriesDone: number;
  entriesTotal: number;
  bytesInflated: number;
}

export interface ValidationRequest {
  operationId: string;
  aac: Aac;
  archivePath: string;
  /** What the server verified at upload; the pool hashes the file itself when absent. */
  sha256?: Uint8Array;
  timeoutMs?: number;
  onProgress?: (p: ValidationProgress) => void;
  /** The resource provider: the worker asks by provider id; the server checks id and AAC. */
  resources?: (providerId: string, aac: Aac) => Promise<string>;
}

export interface ProcessorOutput {
  processorId: "security" | "documentation" | "metadata";
  json: unknown;
}

/** `reason: "POOL_CLOSED"` means the server is stopping: the archive was not judged. */
export type ValidationOutcome =
  | { ok: true; outputs: ProcessorOutput[]; entryCount: number; uncompressedSize: number }
  | { ok: false; reason: string; detail: string };

export interface ArchiveValidator {
  validate(req: ValidationRequest): Promise<ValidationOutcome>;
}
