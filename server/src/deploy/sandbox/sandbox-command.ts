// How a deploy worker is confined (deploy validation, seed 001): bubblewrap with every
// namespace unshared (no network), an unprivileged uid, read-only /usr and repository, a
// private /tmp, only its own scratch writable at /scratch, and rlimits applied by prlimit.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";

export interface SandboxLimits {
  addressSpaceBytes: number;
  fileSizeBytes: number;
  openFiles: number;
  cpuSeconds: number;
  /** V8 old-space cap (--max-old-space-size). */
  maxHeapMiB: number;
}

export const DEFAULT_SANDBOX_LIMITS: SandboxLimits = {
  // Probed here: WebAssembly (tsx's lexer) reserves ~10 GiB of guard regions per instance, so
  // 4/12/16 GiB made node+tsx fail to start; 64 GiB works. The real memory bound is the V8
  // heap cap (maxHeapMiB) — address space only stops runaway mappings.
  addressSpaceBytes: 64 * 1024 * 1024 * 1024,
  maxHeapMiB: 384,
  fileSizeBytes: 256 * 1024 * 1024,
  openFiles: 64,
  cpuSeconds: 120,
};

export const REPO_ROOT = resolve(fileURLToPath(new URL("../../../../", import.meta.url)));
export const WORKER_MAIN = resolve(REPO_ROOT, "server/src/deploy/worker/main.ts");
const TSX_LOADER = "file://" + resolve(REPO_ROOT, "node_modules/tsx/dist/loader.mjs");

export function bwrapAvailable(): boolean {
  return existsSync("/usr/bin/bwrap") && existsSync("/usr/bin/prlimit");
}

/** argv (program first) running `node <script> ...args` in the sandbox with `scratch` at /scratch. */
export function sandboxArgv(scratch: string, script: string, limits: SandboxLimits = DEFAULT_SANDBOX_LIMITS, args: string[] = []): string[] {
  const dirs = [["/lib", "usr/lib"], ["/lib64", "usr/lib64"], ["/bin", "usr/bin"], ["/sbin", "usr/sbin"]].flatMap(([at, to]) =>
    existsSync(at!) ? ["--symlink", to!, at!] : [],
  );
  return [
    "/usr/bin/bwrap",
    "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
    "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr", ...dirs,
    "--ro-bind", REPO_ROOT, REPO_ROOT,
    "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
    "--bind", scratch, "/scratch", "--chdir", "/scratch",
    "--setenv", "TRUSTPLANE_SCRATCH", "/scratch",
    "--",
    "/usr/bin/prlimit", `--as=${limits.addressSpaceBytes}`, `--fsize=${limits.fileSizeBytes}`, `--nofile=${limits.openFiles}`, `--cpu=${limits.cpuSeconds}`, "--",
    process.execPath, `--max-old-space-size=${limits.maxHeapMiB}`, "--import", TSX_LOADER, script, ...args,
  ];
}

/** The unsandboxed fallback (dev only): same script, scratch by env. */
export function plainArgv(scratch: string, script: string, args: string[] = []): { argv: string[]; env: Record<string, string> } {
  return { argv: [process.execPath, "--import", TSX_LOADER, script, ...args], env: { TRUSTPLANE_SCRATCH: scratch } };
}
