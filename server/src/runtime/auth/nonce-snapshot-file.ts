// The replay cache across a graceful restart of a single-process server or an agent: the
// stopping process writes its MemoryNonceStore snapshot beside its other state (0600,
// atomic), the next one takes it over and deletes the file at once, so a crash later can
// never hand over a stale copy. Without a snapshot the store covers only calls signed after
// the start, and the verifier refuses older ones (SIGNED_BEFORE_RESTART).
import { existsSync, readFileSync, rmSync } from "node:fs";
import { writeSecretFile } from "../key-file.js";
import type { Logger } from "../logger.js";
import { MemoryNonceStore } from "./memory-nonce-store.js";

export const NONCE_SNAPSHOT_FILE = "nonces.snapshot";

export function openNonceStore(file: string, logger: Logger): MemoryNonceStore {
  const store = new MemoryNonceStore();
  if (existsSync(file)) {
    try {
      store.restore(Buffer.from(readFileSync(file, "utf8"), "base64"));
      logger.info({ nonces: store.size }, "replay cache taken over from the previous graceful stop");
    } catch (e) {
      logger.warn({ err: (e as Error).message }, "replay-cache snapshot unusable; calls signed before this start are refused");
    }
    rmSync(file, { force: true });
  }
  return store;
}

export function saveNonceStore(store: MemoryNonceStore, file: string): void {
  writeSecretFile(file, store.snapshot().toString("base64"));
}
