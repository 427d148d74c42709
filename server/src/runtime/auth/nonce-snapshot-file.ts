// The replay cache of a process that keeps call nonces in memory (a single-process server on
// SQLite, an agent) across its restarts. A graceful stop writes the MemoryNonceStore snapshot
// beside its other state (0600, atomic) and the next start takes it over and deletes the file
// at once, so a crash later can never hand over a stale copy: nothing is refused. After a
// crash there is no snapshot, and the restart fence (restart-fenced-nonce-store.ts) refuses
// every call the previous run may have accepted (SIGNED_BEFORE_RESTART).
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { writeSecretFile } from "../key-file.js";
import type { Logger } from "../logger.js";
import { MemoryNonceStore } from "./memory-nonce-store.js";
import { RestartFencedNonceStore } from "./restart-fenced-nonce-store.js";

export const NONCE_SNAPSHOT_FILE = "nonces.snapshot";

export const NONCE_FENCE_FILE = "call-nonce-fence";

export interface VolatileNonceStore {
  /** What the call verifier uses. */
  store: RestartFencedNonceStore;
  /** At a graceful stop, after the last call was verified. */
  save(): void;
  /** On a failed start. */
  close(): void;
}

export function openVolatileNonceStore(dir: string, logger: Logger): VolatileNonceStore {
  const snapshotFile = path.join(dir, NONCE_SNAPSHOT_FILE);
  const memory = new MemoryNonceStore();
  let restored = false;
  if (existsSync(snapshotFile)) {
    try {
      memory.restore(Buffer.from(readFileSync(snapshotFile, "utf8"), "base64"));
      restored = true;
      logger.info({ nonces: memory.size }, "replay cache taken over from the previous graceful stop");
    } catch (e) {
      logger.warn({ err: (e as Error).message }, "replay-cache snapshot unusable; calls the previous run may have accepted are refused");
    }
    rmSync(snapshotFile, { force: true });
  }
  const store = RestartFencedNonceStore.open(memory, path.join(dir, NONCE_FENCE_FILE), { coveredByInner: restored });
  let closed = false;
  const close = () => {
    if (!closed) store.close();
    closed = true;
  };
  return {
    store,
    save() {
      writeSecretFile(snapshotFile, memory.snapshot().toString("base64"));
      close();
    },
    close,
  };
}
