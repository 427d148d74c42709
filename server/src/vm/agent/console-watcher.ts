// Follows a guest's console file (QEMU serial, sandbox stdout) line by line, so drivers can
// wait for a ready line and tests can read what the guest printed. The file, not a pipe,
// keeps the guest independent of the agent: it survives an agent restart.
import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export class ConsoleWatcher {
  private offset = 0;
  private partial = "";
  readonly lines: string[] = [];

  constructor(readonly file: string) {}

  /** Reads whatever was appended since the last call; returns the new complete lines. */
  poll(): string[] {
    if (!existsSync(this.file)) return [];
    const fd = openSync(this.file, "r");
    const fresh: string[] = [];
    try {
      const buf = Buffer.alloc(65536);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        this.partial += buf.subarray(0, n).toString("utf8");
      }
    } finally {
      closeSync(fd);
    }
    const parts = this.partial.split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) fresh.push(p.replace(/\r$/, ""));
    this.lines.push(...fresh);
    if (this.lines.length > 5000) this.lines.splice(0, this.lines.length - 5000);
    return fresh;
  }

  /** Waits for a line matching `re` (also among lines already read); polls every `intervalMs`. */
  async waitFor(re: RegExp, timeoutMs: number, opts: { intervalMs?: number; alive?: () => boolean; what?: string } = {}): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const seen = this.lines.find((l) => re.test(l));
    if (seen) return seen;
    for (;;) {
      const hit = this.poll().find((l) => re.test(l));
      if (hit) return hit;
      if (opts.alive && !opts.alive()) {
        throw new TrustplaneError("INTERNAL", "GUEST_EXITED", `${opts.what ?? "the guest"} exited before printing ${re}: ${this.lines.slice(-5).join(" | ")}`);
      }
      if (Date.now() > deadline) {
        throw new TrustplaneError("DEADLINE_EXCEEDED", "BOOT_TIMEOUT", `${opts.what ?? "the guest"} printed no ${re} within ${timeoutMs} ms: ${this.lines.slice(-5).join(" | ")}`);
      }
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
    }
  }
}
