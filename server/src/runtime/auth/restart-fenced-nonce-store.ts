// Replay protection across restarts for a process whose call nonces live in memory (agents):
// implements "nonce unseen within that window" when the window outlives the process. The
// store keeps, durably, a high-water mark W above the expiry of every nonce it ever accepted;
// after a restart it refuses every nonce expiring at or before the previous run's W, since the
// previous run may have accepted it and the in-memory cache no longer knows. A fresh call is
// refused only if signed less than MARGIN after the newest call the previous run accepted
// (by the same clock), which a restart never is; a caller refused anyway simply re-signs.
//
// Why a mark and not "refuse what was signed before the process started": a statement may be
// dated up to the skew into the future, so the previous run may have accepted (and a replayer
// may hold) one dated after this run's start. The mark covers exactly what was accepted.
// It needs only that a nonce's expiry grows with its statement's timestamp, as it does
// (timestamp + skew in the CallVerifier), and at most one durable write per MARGIN of growth.
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, renameSync, write, writeFileSync, fsyncSync } from "node:fs";
import path from "node:path";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { NonceStore } from "./nonce-store.js";

/** How far each durable raise of the mark reaches past the expiry that required it. */
const MARGIN_MS = 250;

const writeAsync = (fd: number, text: string) =>
  new Promise<void>((resolve, reject) => write(fd, text, (e) => (e ? reject(e) : resolve())));

export class RestartFencedNonceStore implements NonceStore {
  /** Nonces expiring at or before this may have been accepted by a previous run (0: none refused). */
  readonly fence: number;
  /** Highest expiry the mark file durably covers. */
  private durable: number;
  private raising?: Promise<void>;
  private wanted = 0;
  private readonly fd: number;

  private constructor(
    private readonly inner: NonceStore,
    file: string,
    fence: number,
    refuse: boolean,
  ) {
    // The mark stays where it was even when nothing is refused, so a crash of this run still
    // fences what the previous one accepted.
    this.fence = refuse ? fence : 0;
    this.durable = fence;
    // Rewritten with the one value that matters, then appended to (O_DSYNC: durable on return).
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, `${fence}\n`, { mode: 0o600 });
    const tfd = openSync(tmp, "r+");
    try {
      fsyncSync(tfd);
    } finally {
      closeSync(tfd);
    }
    renameSync(tmp, file);
    const dir = openSync(path.dirname(file), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_DSYNC);
  }

  /**
   * Opens the mark file (one expiry in ms per line; a torn last line never made it durable).
   * `coveredByInner`: the inner store already holds every nonce the previous run accepted (a
   * snapshot handed over at its graceful stop), so nothing needs refusing this time.
   */
  static open(inner: NonceStore, file: string, opts: { coveredByInner?: boolean } = {}): RestartFencedNonceStore {
    let fence = 0;
    if (existsSync(file)) {
      const lines = readFileSync(file, "utf8").split("\n");
      // The last element is what follows the final newline: a torn write, or "".
      for (const l of lines.slice(0, -1)) if (/^\d+$/.test(l)) fence = Math.max(fence, Number(l));
    }
    return new RestartFencedNonceStore(inner, file, fence, !opts.coveredByInner);
  }

  async remember(nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
    if (expiresAtMs <= this.fence) {
      throw new TrustplaneError(
        "UNAUTHENTICATED",
        "SIGNED_BEFORE_RESTART",
        "this call was signed before the agent restarted, and the agent cannot tell whether it was already used; sign it again (the SDK signs every call afresh)",
      );
    }
    while (expiresAtMs > this.durable) await this.raise(expiresAtMs);
    return this.inner.remember(nonce, expiresAtMs);
  }

  /** Raises the durable mark past `expiresAtMs`; concurrent callers share one write. */
  private async raise(expiresAtMs: number): Promise<void> {
    this.wanted = Math.max(this.wanted, expiresAtMs);
    if (!this.raising) {
      this.raising = (async () => {
        try {
          const target = this.wanted + MARGIN_MS;
          await writeAsync(this.fd, `${target}\n`);
          this.durable = Math.max(this.durable, target);
        } finally {
          this.raising = undefined;
        }
      })();
    }
    await this.raising;
  }

  close(): void {
    closeSync(this.fd);
  }
}
