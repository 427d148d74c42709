// The shape every sub-processor of a deploy worker shares (deploy validation, seed 001): it
// reads the descriptor files the core processor kept, may ask the server's resource provider
// for whitelisted data about its own AAC, and returns a JSON-able result, which the worker
// writes into scratch and identifies by {processorId, file, sha256, size}.
export type ProcessorId = "security" | "documentation" | "metadata";

export interface SubProcessorContext {
  /** Asks the server's resource provider (e.g. "roles.current"); the server answers only for this operation's AAC. */
  resource(providerId: string): Promise<unknown>;
}

export interface SubProcessor {
  id: ProcessorId;
  run(files: ReadonlyMap<string, Buffer>, ctx: SubProcessorContext): unknown;
}
