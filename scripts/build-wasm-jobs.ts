// Compiles the example job modules (examples/jobs/*.wat) to WebAssembly with wabt (seed 003:
// "code as a WebAssembly module with a small documented ABI"). Used at run time by the
// examples, tests and benchmarks so no binaries live in git; `tsx scripts/build-wasm-jobs.ts
// [outDir]` also writes the .wasm files. ABI: sdk/src/job/ABI.md.
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import wabtInit from "wabt";

export const JOBS_DIR = fileURLToPath(new URL("../examples/jobs/", import.meta.url));

let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** WAT text → module bytes (bulk memory enabled: memory.copy/fill). */
export async function compileWat(text: string, name = "job.wat"): Promise<Uint8Array> {
  wabt ??= await wabtInit();
  const mod = wabt.parseWat(name, text, { bulk_memory: true });
  try {
    mod.resolveNames();
    mod.validate();
    const { buffer } = mod.toBinary({ log: false, write_debug_names: false });
    return new Uint8Array(buffer);
  } finally {
    mod.destroy();
  }
}

/** One example job module by name ("byte-sum", "word-frequency", "csv-aggregate"). */
export async function buildJobModule(name: string): Promise<Uint8Array> {
  return compileWat(readFileSync(path.join(JOBS_DIR, `${name}.wat`), "utf8"), `${name}.wat`);
}

export async function buildAllJobModules(): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const f of readdirSync(JOBS_DIR).filter((n) => n.endsWith(".wat")).sort()) {
    const name = f.slice(0, -4);
    out.set(name, await buildJobModule(name));
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const outDir = path.resolve(process.argv[2] ?? path.join(JOBS_DIR, "build"));
  mkdirSync(outDir, { recursive: true });
  for (const [name, bytes] of await buildAllJobModules()) {
    writeFileSync(path.join(outDir, `${name}.wasm`), bytes);
    process.stdout.write(`${name}.wasm  ${bytes.length} bytes\n`);
  }
}
