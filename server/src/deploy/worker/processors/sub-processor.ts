// The shape every sub-processor of a deploy worker shares (deploy validation, seed 001): it
// reads the descriptor files the core processor kept and returns a JSON-able result, which
// the worker writes into scratch and identifies by {processorId, file, sha256, size}.
export type ProcessorId = "security" | "documentation" | "metadata";

export interface SubProcessor {
  id: ProcessorId;
  run(files: ReadonlyMap<string, Buffer>): unknown;
}
