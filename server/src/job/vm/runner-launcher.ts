// Starts one untrusted job runner process (seed 003's "job VM"). Under bubblewrap when it is
// installed (own namespaces, no network, read-only root, private /tmp), else as a plain child
// with rlimits: no core dumps, no files written (fsize 0: plaintext never reaches disk), a CPU
// budget, few descriptors, a capped JS heap. Its environment carries nothing of the server's.
import { spawn, spawnSync, type ChildProcessByStdio } from "node:child_process";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { fileURLToPath, pathToFileURL } from "node:url";

export type RunnerProcess = ChildProcessByStdio<Writable, Readable, Readable>;

export interface RunnerLaunch {
  /** CPU seconds the runner may use in total (rlimit). */
  cpuSeconds: number;
  /** "auto" uses bubblewrap when present. */
  isolation?: "auto" | "sandbox" | "process";
}

const RUNNER = fileURLToPath(new URL("./runner-main.ts", import.meta.url));
/** The repository (runner code and node_modules), re-bound read-only inside the sandbox: the
 * private /tmp would otherwise hide a checkout that lives under /tmp (CI clones do). */
const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const TSX_LOADER = pathToFileURL(path.join(path.dirname(createRequire(import.meta.url).resolve("tsx/package.json")), "dist", "loader.mjs")).href;

let probed: { bwrap?: string; prlimit?: string } | undefined;

function which(bin: string): string | undefined {
  const r = spawnSync("sh", ["-c", `command -v ${bin}`], { encoding: "utf8" });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

export function runnerIsolation(): "sandbox" | "process" {
  probed ??= { bwrap: which("bwrap"), prlimit: which("prlimit") };
  return probed.bwrap ? "sandbox" : "process";
}

export function launchRunner(opts: RunnerLaunch): RunnerProcess {
  const isolation = opts.isolation === undefined || opts.isolation === "auto" ? runnerIsolation() : opts.isolation;
  probed ??= { bwrap: which("bwrap"), prlimit: which("prlimit") };
  const node = [process.execPath, "--max-old-space-size=256", "--import", TSX_LOADER, RUNNER];
  const limits = probed.prlimit ? [probed.prlimit, `--cpu=${Math.ceil(opts.cpuSeconds)}`, "--core=0", "--fsize=0", "--nofile=128", "--"] : [];
  const sandbox =
    isolation === "sandbox" && probed.bwrap
      ? [probed.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--ro-bind", REPO_ROOT, REPO_ROOT, "--proc", "/proc", "--dev", "/dev", "--"]
      : [];
  const argv = [...sandbox, ...limits, ...node];
  return spawn(argv[0]!, argv.slice(1), {
    stdio: ["pipe", "pipe", "pipe"],
    cwd: os.tmpdir(),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TSX_DISABLE_CACHE: "1", NODE_ENV: "production" },
  });
}
