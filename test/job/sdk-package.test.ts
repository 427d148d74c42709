// The SDK's package entry points (secure-jobs' SDK surface among them): every subpath in
// sdk/package.json "exports" names a file that exists and loads, and the job surface carries
// what the issue names (encryptToStorage, openSession, runJob, KeyHolder, ledgers).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";

const SDK = fileURLToPath(new URL("../../sdk/", import.meta.url));
const pkg = JSON.parse(readFileSync(path.join(SDK, "package.json"), "utf8")) as { exports: Record<string, string> };

describe("@trustplane/sdk exports", () => {
  it("every exported subpath exists and loads", async () => {
    for (const [subpath, target] of Object.entries(pkg.exports)) {
      if (subpath.includes("*")) {
        expect(existsSync(path.join(SDK, target.replace("/*", ""))), subpath).toBe(true);
        continue;
      }
      const file = path.join(SDK, target);
      expect(existsSync(file), `${subpath} -> ${target}`).toBe(true);
      await expect(import(pathToFileURL(file).href), subpath).resolves.toBeTruthy();
    }
  });

  it("the root and the job subpath carry the secure-job API", async () => {
    const root = await import(pathToFileURL(path.join(SDK, pkg.exports["."]!)).href);
    const job = await import(pathToFileURL(path.join(SDK, pkg.exports["./job"]!)).href);
    for (const name of ["encryptToStorage", "openSession", "runJob", "KeyHolder", "FileOtkLedger", "MemoryOtkLedger", "verifyJobVmAttestation", "pinnedCaKeys"]) {
      expect(typeof job[name], name).toBe("function");
      expect(typeof root.job[name], `job.${name}`).toBe("function");
    }
    expect(typeof root.createClient).toBe("function");
    expect(typeof root.TrustplaneError).toBe("function");
    expect(typeof root.envelope.encryptBytes).toBe("function");
  });
});
