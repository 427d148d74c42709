// `npm run demo`: the tour. Starts the real `trustplane dev` command in a temporary directory,
// runs every example flow against it, prints what each did and proved, then stops dev with
// SIGTERM (graceful drain) and removes the directory. Exits non-zero if any flow failed.
import type { JsonWebKey } from "node:crypto";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { importSigningKey } from "../sdk/src/auth/index.js";
import { FLOWS } from "./flows.js";
import type { TourContext } from "./tour-context.js";

const CLI = fileURLToPath(new URL("../server/src/cli/main.ts", import.meta.url));

async function startDev(dataDir: string) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", CLI, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--log-level", "warn"],
    { stdio: ["ignore", "inherit", "pipe"] },
  );
  const endpoints = await new Promise<{ server: string; agent: string }>((resolve, reject) => {
    let err = "";
    const timer = setTimeout(() => reject(new Error(`trustplane dev did not start within 60 s:\n${err}`)), 60_000);
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      const server = /server\s+(\S+:\d+)/.exec(err)?.[1];
      const agent = /agent\s+(\S+:\d+)/.exec(err)?.[1];
      if (server && agent && err.includes("admin key")) {
        clearTimeout(timer);
        resolve({ server, agent });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`trustplane dev exited with ${code}:\n${err}`));
    });
  });
  const stop = () =>
    new Promise<number | null>((resolve) => {
      child.removeAllListeners("exit");
      child.once("exit", (code) => resolve(code));
      child.kill("SIGTERM");
    });
  return { ...endpoints, stop };
}

const dataDir = mkdtempSync(path.join(os.tmpdir(), "trustplane-demo-"));
const started = Date.now();
process.stdout.write(`▶ starting trustplane dev in ${dataDir}\n`);
const dev = await startDev(dataDir);
process.stdout.write(`  server ${dev.server} · agent ${dev.agent}\n\n`);
const ctx: TourContext = {
  server: dev.server,
  agent: dev.agent,
  dataDir,
  admin: importSigningKey(JSON.parse(readFileSync(path.join(dataDir, "admin.jwk.json"), "utf8")) as JsonWebKey),
  say: (line) => process.stdout.write(`  ✓ ${line}\n`),
};

const outcomes: { name: string; ok: boolean; ms: number; error?: string }[] = [];
for (const flow of FLOWS) {
  process.stdout.write(`▶ ${flow.title}\n`);
  const t = Date.now();
  try {
    await flow.run(ctx);
    outcomes.push({ name: flow.name, ok: true, ms: Date.now() - t });
  } catch (e) {
    process.stdout.write(`  ✗ ${(e as Error).message}\n`);
    outcomes.push({ name: flow.name, ok: false, ms: Date.now() - t, error: (e as Error).message });
  }
  process.stdout.write("\n");
}

const code = await dev.stop();
process.stdout.write(`▶ trustplane dev stopped gracefully (exit ${code})\n\n`);
rmSync(dataDir, { recursive: true, force: true });
const width = Math.max(...outcomes.map((o) => o.name.length));
for (const o of outcomes) process.stdout.write(`  ${o.ok ? "PASS" : "FAIL"}  ${o.name.padEnd(width)}  ${(o.ms / 1000).toFixed(1)} s\n`);
process.stdout.write(`\n${outcomes.filter((o) => o.ok).length} flows passed, ${outcomes.filter((o) => !o.ok).length} failed in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exit(outcomes.every((o) => o.ok) && code === 0 ? 0 : 1);
