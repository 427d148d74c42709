// The key holder's durable one-time-job-key ledger (seed 003: "releases the DEK at most once
// per OTK"). Pluggable; FileOtkLedger is the default: an append-only JSON-lines file, fsynced
// before the key holder answers, reloaded on start, guarded by a lock file against a second
// process. It stores OTK digests and bindings only — never an OTK or a DEK.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync, constants } from "node:fs";
import { open as openFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError } from "../errors.js";

/** What an OTK was issued for: the job's code, its DEK and its data. */
export interface OtkBinding {
  /** SHA-256 of the WebAssembly module, hex. */
  codeSha256: string;
  dekId: string;
  /** Stored input (tenant/name) or inline input. */
  data: { tenant: string; name: string } | { inline: true };
  issuedAtMs: number;
}

export interface OtkUse {
  jobId: string;
  outcome: "released" | "denied";
  reason?: string;
  atMs: number;
}

export interface OtkEntry {
  binding: OtkBinding;
  use?: OtkUse;
}

export interface OtkLedger {
  /** The entry for an OTK digest (hex), if this holder issued it. */
  lookup(otkDigest: string): OtkEntry | undefined;
  /** Durably records an issued OTK before it is handed out. */
  recordIssued(otkDigest: string, binding: OtkBinding): Promise<void>;
  /**
   * Durably records the OTK's one use; resolves false (recording nothing) if it was already
   * used. The caller answers the key request only after this resolved true.
   */
  recordUse(otkDigest: string, use: OtkUse): Promise<boolean>;
  close(): Promise<void>;
}

/** In memory only: for tests and short-lived tools (a restart forgets every use). */
export class MemoryOtkLedger implements OtkLedger {
  protected readonly entries = new Map<string, OtkEntry>();

  lookup(otkDigest: string): OtkEntry | undefined {
    return this.entries.get(otkDigest);
  }

  async recordIssued(otkDigest: string, binding: OtkBinding): Promise<void> {
    if (this.entries.has(otkDigest)) throw new TrustplaneError("ALREADY_EXISTS", "OTK_EXISTS", "this OTK was already issued");
    this.entries.set(otkDigest, { binding });
  }

  async recordUse(otkDigest: string, use: OtkUse): Promise<boolean> {
    const e = this.entries.get(otkDigest);
    if (!e || e.use) return false;
    e.use = use;
    return true;
  }

  async close(): Promise<void> {}
}

type Line = { op: "issue"; otk: string; binding: OtkBinding } | { op: "use"; otk: string; use: OtkUse };

export class FileOtkLedger extends MemoryOtkLedger {
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly file: string,
    private readonly handle: FileHandle,
    private readonly lockFile: string,
  ) {
    super();
  }

  /** Opens (creating if needed) the ledger file and takes its lock. */
  static async open(file: string): Promise<FileOtkLedger> {
    const lockFile = `${file}.lock`;
    takeLock(lockFile);
    try {
      const handle = await openFile(file, "a+", 0o600);
      const ledger = new FileOtkLedger(file, handle, lockFile);
      ledger.load(readFileSync(file, "utf8"));
      // The directory entry must survive a crash too.
      const dir = await openFile(path.dirname(path.resolve(file)), "r");
      await dir.sync().finally(() => dir.close());
      return ledger;
    } catch (e) {
      unlinkSync(lockFile);
      throw e;
    }
  }

  private load(text: string): void {
    for (const raw of text.split("\n")) {
      if (raw.trim() === "") continue;
      let line: Line;
      try {
        line = JSON.parse(raw) as Line;
      } catch {
        // A torn last line: its write never completed, so it was never acted on.
        continue;
      }
      if (line.op === "issue") this.entries.set(line.otk, { binding: line.binding });
      else {
        const e = this.entries.get(line.otk);
        if (e) e.use ??= line.use;
        // A use of an OTK whose issue line is missing still blocks it.
        else this.entries.set(line.otk, { binding: { codeSha256: "", dekId: "", data: { inline: true }, issuedAtMs: 0 }, use: line.use });
      }
    }
  }

  private append(line: Line): Promise<void> {
    const run = this.chain.then(async () => {
      await this.handle.appendFile(`${JSON.stringify(line)}\n`, "utf8");
      await this.handle.sync();
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  override async recordIssued(otkDigest: string, binding: OtkBinding): Promise<void> {
    await super.recordIssued(otkDigest, binding);
    await this.append({ op: "issue", otk: otkDigest, binding });
  }

  override async recordUse(otkDigest: string, use: OtkUse): Promise<boolean> {
    // Marked in memory first (synchronously), so a concurrent request sees it at once.
    if (!(await super.recordUse(otkDigest, use))) return false;
    await this.append({ op: "use", otk: otkDigest, use });
    return true;
  }

  override async close(): Promise<void> {
    await this.chain;
    await this.handle.close();
    try {
      unlinkSync(this.lockFile);
    } catch {
      // already gone
    }
  }
}

function takeLock(lockFile: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(readFileSync(lockFile, "utf8"));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) break;
      if (pid === process.pid) break;
      // The holder died without closing: the ledger itself is intact (fsynced lines).
      unlinkSync(lockFile);
    }
  }
  throw new TrustplaneError("FAILED_PRECONDITION", "OTK_LEDGER_LOCKED", `the OTK ledger ${lockFile.slice(0, -5)} is open in another key holder; close it first (one holder per ledger)`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
