// Test support: runs the real `trustplane` CLI binary as a separate process against a dev
// environment (data directory and server address from the environment, as users set them).
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import type { DevEnv } from "./dev-env.js";

const run = promisify(execFile);
const CLI = path.resolve("server/bin/trustplane.mjs");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(env: DevEnv, ...args: string[]): Promise<CliResult> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, TRUSTPLANE_DATA_DIR: env.config.dataDir, TRUSTPLANE_SERVER: env.dev.server.address }, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}
