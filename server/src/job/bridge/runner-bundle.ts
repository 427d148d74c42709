// The job runner as the job VM sees it (seed 003): runner-main.ts and what it imports, bundled
// by esbuild into one self-contained file under the agent's state directory, which the sandbox
// driver binds read-only into each job VM. The VM then needs no repository, no loader and no
// node_modules — so it is given none of them (they sit beside the agent's and server's data).
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleScript } from "../../runtime/script-bundle.js";

const RUNNER_ENTRY = fileURLToPath(new URL("../vm/runner-main.ts", import.meta.url));

export interface RunnerBundle {
  /** Directory holding only the bundle (bound read-only into job VMs). */
  dir: string;
  file: string;
  sha256: string;
}

/** Builds (or reuses) the bundle in `<dir>/`. */
export async function buildRunnerBundle(dir: string): Promise<RunnerBundle> {
  const file = bundleScript(RUNNER_ENTRY, dir);
  const sha256 = createHash("sha256").update(await readFile(file)).digest("hex");
  return { dir: path.dirname(file), file, sha256 };
}
