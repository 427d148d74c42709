// Self-contained scripts for sandboxes: esbuild bundles a TypeScript entry point and what it
// imports into one ES module, so a sandboxed process runs plain `node file.mjs` and its
// sandbox binds that one file instead of the repository (which may hold a data directory,
// keys or other tenants' files) and needs no tsx loader.
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { buildSync } from "esbuild";

const built = new Map<string, string>();

/**
 * Bundles `entry` into `outDir` (created 0755: the sandbox's unprivileged user must read it)
 * and returns the bundle's path. Built once per entry, source mtime and directory; the file
 * is written under a temporary name and renamed, so a concurrent reader never sees half.
 */
export function bundleScript(entry: string, outDir: string): string {
  const abs = path.resolve(entry);
  const key = `${abs}\0${statSync(abs).mtimeMs}\0${path.resolve(outDir)}`;
  const cached = built.get(key);
  if (cached && existsSync(cached)) return cached;
  mkdirSync(outDir, { recursive: true, mode: 0o755 });
  const name = `${path.basename(abs).replace(/\.[cm]?tsx?$/, "")}-${createHash("sha256").update(key).digest("hex").slice(0, 12)}.mjs`;
  const out = path.join(outDir, name);
  const tmp = `${out}.${process.pid}.tmp`;
  buildSync({
    entryPoints: [abs],
    outfile: tmp,
    bundle: true,
    platform: "node",
    format: "esm",
    // CommonJS dependencies (yauzl, …) call require(); an ES module has none of its own.
    banner: { js: "import { createRequire as __tpCreateRequire } from 'node:module'; const require = __tpCreateRequire(import.meta.url);" },
    target: "node20",
    logLevel: "silent",
    legalComments: "none",
  });
  chmodSync(tmp, 0o444);
  renameSync(tmp, out);
  // Earlier builds of the same entry are never run again.
  const prefix = name.slice(0, name.lastIndexOf("-") + 1);
  for (const f of readdirSync(outDir)) if (f !== name && f.startsWith(prefix) && f.endsWith(".mjs")) rmSync(path.join(outDir, f), { force: true });
  built.set(key, out);
  return out;
}
