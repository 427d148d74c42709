// One deploy worker process seen from the server (deploy validation, seed 001): its own
// 0700 scratch directory, a clean environment (no credentials), its own process group so a
// kill reaches everything it started, and the framed protobuf channel on its stdio.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ServerToWorker, WorkerToServer } from "../../../../sdk/src/gen/trustplane/deploy/v1/worker.js";
import { encodeFrame, FrameReader } from "../worker/frame-codec.js";
import { binDirFor, plainArgv, sandboxArgv, WORKER_MAIN, type SandboxLimits } from "./sandbox-command.js";

export interface WorkerSpawnOptions {
  scratchRoot: string;
  sandboxed: boolean;
  limits: SandboxLimits;
  /** Tests run probe scripts through the same confinement. */
  script?: string;
}

export class SandboxedWorker {
  readonly scratch: string;
  readonly child: ChildProcess;
  operations = 0;
  lastUsed = Date.now();
  exited = false;
  private listener?: (m: WorkerToServer) => void;
  private exitListener?: (code: number | null, signal: string | null) => void;
  readonly ready: Promise<void>;

  constructor(opts: WorkerSpawnOptions) {
    this.scratch = mkdtempSync(join(opts.scratchRoot, "w-"));
    const script = opts.script ?? WORKER_MAIN;
    const env: Record<string, string> = { PATH: "/usr/bin:/bin" };
    let argv: string[];
    const binDir = binDirFor(opts.scratchRoot);
    if (opts.sandboxed) argv = sandboxArgv(this.scratch, script, binDir, opts.limits);
    else {
      const p = plainArgv(this.scratch, script, binDir);
      argv = p.argv;
      Object.assign(env, p.env);
    }
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], detached: true, env });
    let resolveReady!: () => void;
    let rejectReady!: (e: Error) => void;
    this.ready = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
    this.ready.catch(() => undefined);
    const reader = new FrameReader(
      (payload) => {
        const m = WorkerToServer.decode(payload);
        if (m.ready) return resolveReady();
        this.listener?.(m);
      },
      () => this.kill(),
    );
    this.child.stdout!.on("data", (c: Buffer) => reader.push(c));
    this.stderr = "";
    this.child.stderr!.on("data", (c: Buffer) => { if (this.stderr.length < 8192) this.stderr += c.toString(); });
    this.child.stdin!.on("error", () => undefined);
    this.child.on("exit", (code, signal) => {
      this.exited = true;
      rejectReady(new Error(`worker exited before ready (${code ?? signal}): ${this.stderr.slice(0, 500)}`));
      this.exitListener?.(code, signal);
    });
  }

  stderr: string;

  onMessage(fn: ((m: WorkerToServer) => void) | undefined): void { this.listener = fn; }
  onExit(fn: ((code: number | null, signal: string | null) => void) | undefined): void { this.exitListener = fn; }

  send(m: ServerToWorker): void {
    this.child.stdin!.write(encodeFrame(ServerToWorker.encode(ServerToWorker.fromPartial(m)).finish()));
  }

  /** SIGKILL to the whole process group (bwrap, prlimit, node). */
  kill(): void {
    if (this.child.pid && !this.exited) {
      try { process.kill(-this.child.pid, "SIGKILL"); } catch { /* already gone */ }
    }
  }

  wipe(): void {
    rmSync(this.scratch, { recursive: true, force: true });
  }
}
