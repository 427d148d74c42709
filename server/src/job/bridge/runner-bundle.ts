// The job runner as the job VM sees it (seed 003): runner-main.ts and what it imports, bundled
// by esbuild into one self-contained file under the agent's state directory, which the sandbox
// driver binds read-only into each job VM. The VM then needs no repository, no loader and no
// node_modules — so it is given none of them (they sit beside the agent's and server's data).
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

const RUNNER_ENTRY = fileURLToPath(new URL("../vm/runner-main.ts", import.meta.url));

export interface RunnerBundle {
  /** Directory holding only the bundle (bound read-only into job VMs). */
  dir: string;
  file: string;
  sha256: string;
}

/** Builds (or reuses) the bundle in `<dir>/`; the file name carries its content digest. */
export async function buildRunnerBundle(dir: string): Promise<RunnerBundle> {
  let esbuild: typeof import("esbuild");
  try {
    esbuild = await import("esbuild");
  } catch (e) {
    throw new TrustplaneError("FAILED_PRECONDITION", "RUNNER_UNAVAILABLE", `the job runner is bundled with esbuild, which is not installed (${(e as Error).message})`);
  }
  const out = await esbuild.build({
    entryPoints: [RUNNER_ENTRY],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    write: false,
    minify: false,
    legalComments: "none",
    logLevel: "silent",
  });
  const code = out.outputFiles[0]!.contents;
  const sha256 = createHash("sha256").update(code).digest("hex");
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, `job-runner-${sha256.slice(0, 16)}.mjs`);
  const existing = await readFile(file).catch(() => undefined);
  if (!existing || createHash("sha256").update(existing).digest("hex") !== sha256) {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, code, { mode: 0o444 });
    await rename(tmp, file);
  }
  return { dir, file, sha256 };
}
