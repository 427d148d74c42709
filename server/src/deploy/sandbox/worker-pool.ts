// The server side of the deploy trust boundary (deploy validation, seed 001): a warm pool of
// sandboxed workers implementing ArchiveValidator. Workers are recycled after N operations or
// idle time and always after any failure; a wall-clock timeout kills the process group,
// wipes scratch and reports WORKER_TIMEOUT; crashes report WORKER_CRASHED / WORKER_LIMIT.
import { copyFileSync, createReadStream, mkdirSync, readFileSync, chmodSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { ArchiveValidator, ValidationOutcome, ValidationRequest } from "../server/archive-validator.js";
import type { ArchiveLimits } from "../worker/archive-limits.js";
import { SandboxedWorker } from "./sandboxed-worker.js";
import { bwrapAvailable, DEFAULT_SANDBOX_LIMITS, type SandboxLimits } from "./sandbox-command.js";
import { createLogger } from "../../runtime/logger.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

export interface WorkerPoolOptions {
  /** Parent of per-worker scratch directories (created 0700). */
  scratchRoot: string;
  size?: number;
  maxOperationsPerWorker?: number;
  idleMs?: number;
  timeoutMs?: number;
  limits?: Partial<ArchiveLimits>;
  sandboxLimits?: SandboxLimits;
  /** Dev only: run workers without bubblewrap when it is missing (logs a warning). */
  allowUnsandboxed?: boolean;
  /** Result files larger than this are refused before the server reads them. */
  maxOutputBytes?: number;
  /** Tests only: a hostile worker entry point run under the same confinement. */
  workerScript?: string;
}

const PROCESSOR_IDS = new Set(["security", "documentation", "metadata"]);

export class WorkerPool implements ArchiveValidator {
  private idle: SandboxedWorker[] = [];
  private busy = new Set<SandboxedWorker>();
  private readonly sandboxed: boolean;
  private readonly log = createLogger().child({ component: "deploy-worker-pool" });
  private sweeper: NodeJS.Timeout;
  private closed = false;
  private startedCount = 0;
  private recycledCount = 0;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.sandboxed = bwrapAvailable();
    if (!this.sandboxed) {
      if (!opts.allowUnsandboxed) throw new TrustplaneError("FAILED_PRECONDITION", "SANDBOX_UNAVAILABLE", "bubblewrap (bwrap) and prlimit are required for deploy workers; install bubblewrap or set allowUnsandboxed for development only");
      this.log.warn("bubblewrap is not available: deploy workers run UNSANDBOXED (development only)");
    }
    mkdirSync(opts.scratchRoot, { recursive: true, mode: 0o700 });
    chmodSync(opts.scratchRoot, 0o700);
    this.sweeper = setInterval(() => this.sweepIdle(), Math.min(this.idleMs, 10_000));
    this.sweeper.unref();
    this.fill();
  }

  get isSandboxed(): boolean { return this.sandboxed; }
  private get idleMs(): number { return this.opts.idleMs ?? 60_000; }

  private spawn(): SandboxedWorker {
    this.startedCount++;
    const w = new SandboxedWorker({ scratchRoot: this.opts.scratchRoot, sandboxed: this.sandboxed, limits: this.opts.sandboxLimits ?? DEFAULT_SANDBOX_LIMITS, script: this.opts.workerScript });
    w.onExit(() => { this.idle = this.idle.filter((x) => x !== w); w.wipe(); });
    return w;
  }

  private fill(): void {
    while (!this.closed && this.idle.length < (this.opts.size ?? 1)) this.idle.push(this.spawn());
  }

  private sweepIdle(): void {
    const now = Date.now();
    for (const w of this.idle) if (now - w.lastUsed > this.idleMs) this.retire(w);
    this.fill();
  }

  private retire(w: SandboxedWorker): void {
    this.recycledCount++;
    this.idle = this.idle.filter((x) => x !== w);
    w.kill();
    w.wipe();
  }

  /** Resolves once the warm workers are up (the constructor already started them). */
  async start(): Promise<void> {
    this.fill();
    await Promise.all(this.idle.map((w) => w.ready));
  }

  stats(): { idle: number; busy: number; started: number; recycled: number } {
    return { idle: this.idle.length, busy: this.busy.size, started: this.startedCount, recycled: this.recycledCount };
  }

  /** Idle workers' pids, for tests and operators. */
  idlePids(): number[] { return this.idle.map((w) => w.child.pid!).filter(Boolean); }
  /** Process-group ids of workers running an operation right now. */
  busyPids(): number[] { return [...this.busy].map((w) => w.child.pid!).filter(Boolean); }

  async validate(req: ValidationRequest): Promise<ValidationOutcome> {
    if (this.closed) throw new TrustplaneError("UNAVAILABLE", "POOL_CLOSED", "the worker pool is closed");
    const w = this.idle.shift() ?? this.spawn();
    this.busy.add(w);
    this.fill();
    let outcome: ValidationOutcome;
    let healthy = false;
    try {
      const sha256 = req.sha256 ?? (await sha256File(req.archivePath));
      await w.ready;
      ({ outcome, healthy } = await this.runOn(w, req, sha256));
    } catch (e) {
      outcome = { ok: false, reason: "WORKER_CRASHED", detail: (e as Error).message.slice(0, 500) };
    }
    // A worker killed because the server is stopping says nothing about the archive.
    if (this.closed && !outcome.ok) outcome = { ok: false, reason: "POOL_CLOSED", detail: "the server stopped during validation" };
    this.busy.delete(w);
    w.operations++;
    w.lastUsed = Date.now();
    if (healthy && outcome.ok && w.operations < (this.opts.maxOperationsPerWorker ?? 50) && !this.closed) {
      w.onMessage(undefined);
      this.idle.push(w);
    } else {
      this.retire(w);
    }
    this.fill();
    return outcome;
  }

  private runOn(w: SandboxedWorker, req: ValidationRequest, sha256: Uint8Array): Promise<{ outcome: ValidationOutcome; healthy: boolean }> {
    const input = "input.zip";
    // A kernel-side copy: the server never reads the archive into its own memory.
    copyFileSync(req.archivePath, join(w.scratch, input));
    const size = statSync(join(w.scratch, input)).size;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: ValidationOutcome, healthy: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        w.onExit(() => { w.wipe(); });
        resolve({ outcome, healthy });
      };
      const timer = setTimeout(() => {
        w.kill();
        w.wipe();
        finish({ ok: false, reason: "WORKER_TIMEOUT", detail: `validation exceeded ${req.timeoutMs ?? this.opts.timeoutMs ?? 60_000} ms; the worker was killed` }, false);
      }, req.timeoutMs ?? this.opts.timeoutMs ?? 60_000);
      w.onExit((code, signal) => {
        w.wipe();
        // SIGXCPU / SIGXFSZ / SIGSEGV-on-AS exhaustion are the rlimits biting.
        const limit = signal === "SIGXCPU" || signal === "SIGXFSZ" || code === 134;
        finish({ ok: false, reason: limit ? "WORKER_LIMIT" : "WORKER_CRASHED", detail: `worker exited (${signal ?? code})` }, false);
      });
      w.onMessage((m) => {
        if (m.progress) req.onProgress?.(m.progress);
        else if (m.resource) {
          const r = m.resource;
          const own = r.account === req.aac.account && r.application === req.aac.application && r.component === req.aac.component;
          const answer = !own || !req.resources
            ? Promise.resolve({ id: r.id, json: "", errorReason: own ? "NO_PROVIDER" : "AAC_MISMATCH" })
            : req.resources(r.providerId, req.aac).then((json) => ({ id: r.id, json, errorReason: "" }), (e: unknown) => ({ id: r.id, json: "", errorReason: e instanceof TrustplaneError ? e.reason : "PROVIDER_FAILED" }));
          void answer.then((resource) => { if (!settled) w.send({ resource }); });
        } else if (m.failure) {
          finish({ ok: false, reason: m.failure.reason, detail: m.failure.detail }, false);
        } else if (m.result) {
          try {
            finish({ ok: true, outputs: this.readOutputs(w, m.result.outputs), entryCount: m.result.entryCount, uncompressedSize: m.result.uncompressedSize }, true);
          } catch (e) {
            finish({ ok: false, reason: "WORKER_BAD_OUTPUT", detail: (e as Error).message }, false);
          }
        }
      });
      w.send({
        validate: {
          operationId: req.operationId, account: req.aac.account, application: req.aac.application, component: req.aac.component,
          archivePath: input, limits: this.opts.limits as never, archiveSize: size,
          archiveSha256: sha256, processorIds: [],
        },
      });
    });
  }

  /** Reads only what the worker identified: known processor, plain file name, size and digest match. */
  private readOutputs(w: SandboxedWorker, outputs: { processorId: string; file: string; sha256: Uint8Array; size: number }[]) {
    const max = this.opts.maxOutputBytes ?? 1024 * 1024;
    return outputs.map((o) => {
      if (!PROCESSOR_IDS.has(o.processorId)) throw new Error(`unknown processor ${o.processorId}`);
      if (!/^[a-z-]+\.json$/.test(o.file)) throw new Error(`bad output file name ${JSON.stringify(o.file)}`);
      if (o.size > max) throw new Error(`output ${o.file} is larger than ${max} bytes`);
      const data = readFileSync(join(w.scratch, o.file));
      if (data.length !== o.size || !createHash("sha256").update(data).digest().equals(Buffer.from(o.sha256))) throw new Error(`output ${o.file} does not match its identifier`);
      return { processorId: o.processorId as "security" | "documentation" | "metadata", json: JSON.parse(data.toString("utf8")) as unknown };
    });
  }

  /** Stops every worker, busy ones too: their validations answer POOL_CLOSED. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const w of [...this.idle]) this.retire(w);
    for (const w of [...this.busy]) w.kill();
  }
}

async function sha256File(file: string): Promise<Uint8Array> {
  const h = createHash("sha256");
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest();
}
