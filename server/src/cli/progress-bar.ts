// A small progress-bar renderer for long CLI transfers (encrypt, upload, run, download): one
// redrawn line on a terminal, a few plain lines otherwise (logs, CI). Reusable by any command.
import type { Writable } from "node:stream";

const WIDTH = 28;

function human(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

export class ProgressBar {
  private readonly started = Date.now();
  private lastDraw = 0;
  private lastPlainStep = -1;
  private finished = false;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private total?: number,
    private readonly out: Writable & { isTTY?: boolean } = process.stderr,
    /** "percent": `done` and `total` are steps (e.g. 0..100), shown without sizes or rates. */
    private readonly unit: "bytes" | "percent" = "bytes",
  ) {
    this.tty = Boolean(out.isTTY);
  }

  /** Bytes done so far (and the total, once known). Redraws at most 10 times a second. */
  update(done: number, total?: number, note = ""): void {
    if (this.finished) return;
    if (total !== undefined) this.total = total;
    const now = Date.now();
    if (this.tty) {
      if (now - this.lastDraw < 100) return;
      this.lastDraw = now;
      this.out.write(`\r${this.line(done, note)}\x1b[K`);
    } else if (this.total) {
      // Plain output: one line per quarter.
      const step = Math.floor((4 * done) / this.total);
      if (step > this.lastPlainStep && step < 4) {
        this.lastPlainStep = step;
        this.out.write(`${this.line(done, note)}\n`);
      }
    }
  }

  done(done: number, note = ""): void {
    if (this.finished) return;
    this.finished = true;
    this.total ??= done;
    this.out.write(`${this.tty ? "\r" : ""}${this.line(done, note)}${this.tty ? "\x1b[K" : ""}\n`);
  }

  line(done: number, note = ""): string {
    const secs = Math.max(0.001, (Date.now() - this.started) / 1000);
    const rate = `${human(done / secs)}/s`;
    if (!this.total) return `${this.label.padEnd(9)} ${human(done)} ${rate}${note ? `  ${note}` : ""}`;
    const frac = Math.min(1, done / this.total);
    const filled = Math.round(frac * WIDTH);
    const bar = `${this.label.padEnd(9)} [${"#".repeat(filled)}${".".repeat(WIDTH - filled)}] ${String(Math.round(frac * 100)).padStart(3)}%`;
    if (this.unit === "percent") return `${bar} ${secs.toFixed(1)} s${note ? `  ${note}` : ""}`;
    return `${this.label.padEnd(9)} [${"#".repeat(filled)}${".".repeat(WIDTH - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${human(done)}/${human(this.total)} ${rate}${note ? `  ${note}` : ""}`;
  }
}
