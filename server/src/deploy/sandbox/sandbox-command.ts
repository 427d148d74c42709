// How a deploy worker is confined (deploy validation, seed 001): bubblewrap with every
// namespace unshared (no network), an unprivileged uid, read-only /usr, the worker's own
// bundled script read-only at /worker (never the repository, which may hold a data
// directory), a private /tmp, only its own scratch directory writable at /scratch, and
// rlimits applied by prlimit.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { basename, dirname, resolve } from "node:path";
import { bundleScript } from "../../runtime/script-bundle.js";

export interface SandboxLimits {
  addressSpaceBytes: number;
  fileSizeBytes: number;
  openFiles: number;
  cpuSeconds: number;
  /** V8 old-space cap (--max-old-space-size). */
  maxHeapMiB: number;
}

export const DEFAULT_SANDBOX_LIMITS: SandboxLimits = {
  // The worker is a plain bundled script (no tsx, no WebAssembly guard regions), so the
  // address space can be a real bound: the V8 heap cap, the archive buffer (uploads are at
  // most 512 MiB) and inflate windows fit with room to spare; a runaway mapping does not.
  addressSpaceBytes: 2 * 1024 * 1024 * 1024,
  maxHeapMiB: 384,
  fileSizeBytes: 256 * 1024 * 1024,
  openFiles: 64,
  cpuSeconds: 120,
};

const REPO_ROOT = resolve(fileURLToPath(new URL("../../../../", import.meta.url)));
export const WORKER_MAIN = resolve(REPO_ROOT, "server/src/deploy/worker/main.ts");

export function bwrapAvailable(): boolean {
  return existsSync("/usr/bin/bwrap") && existsSync("/usr/bin/prlimit");
}

/**
 * argv (program first) running `script` (a TypeScript entry point, bundled into `binDir`)
 * in the sandbox with `scratch` at /scratch. The sandbox sees the system's /usr, the one
 * bundled file and its scratch: nothing of the repository, the server's data or other workers.
 */
export function sandboxArgv(scratch: string, script: string, binDir: string, limits: SandboxLimits = DEFAULT_SANDBOX_LIMITS, args: string[] = []): string[] {
  const bundle = bundleScript(script, binDir);
  const dirs = [["/lib", "usr/lib"], ["/lib64", "usr/lib64"], ["/bin", "usr/bin"], ["/sbin", "usr/sbin"]].flatMap(([at, to]) =>
    existsSync(at!) ? ["--symlink", to!, at!] : [],
  );
  const node = process.execPath.startsWith("/usr/") ? [] : ["--ro-bind", process.execPath, "/worker-node"];
  return [
    "/usr/bin/bwrap",
    "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
    "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr", ...dirs, ...node,
    "--ro-bind", bundle, `/worker/${basename(bundle)}`,
    "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
    "--bind", scratch, "/scratch", "--chdir", "/scratch",
    "--setenv", "TRUSTPLANE_SCRATCH", "/scratch",
    "--",
    "/usr/bin/prlimit", `--as=${limits.addressSpaceBytes}`, `--fsize=${limits.fileSizeBytes}`, `--nofile=${limits.openFiles}`, `--cpu=${limits.cpuSeconds}`, "--",
    node.length ? "/worker-node" : process.execPath, `--max-old-space-size=${limits.maxHeapMiB}`, `/worker/${basename(bundle)}`, ...args,
  ];
}

/** The unsandboxed fallback (dev only): the same bundled script, scratch by env. */
export function plainArgv(scratch: string, script: string, binDir: string, args: string[] = []): { argv: string[]; env: Record<string, string> } {
  return { argv: [process.execPath, bundleScript(script, binDir), ...args], env: { TRUSTPLANE_SCRATCH: scratch } };
}

/** Where a pool keeps its bundled worker scripts: beside (not inside) the scratch root. */
export function binDirFor(scratchRoot: string): string {
  return resolve(dirname(resolve(scratchRoot)), `${basename(scratchRoot)}-bin`);
}
