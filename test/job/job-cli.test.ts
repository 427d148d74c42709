// `trustplane job encrypt|upload|run|result` against a real dev server, as a user runs them
// (child processes of the real CLI): the client's DEK, OTK ledger and pinned CA keys live in
// the client directory (0700, files 0600), nothing of them in the server's data directory.
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { filesUnder } from "./job-test-env.js";

const run = promisify(execFile);
const CLI = fileURLToPath(new URL("../../server/src/cli/main.ts", import.meta.url));
const WAT = fileURLToPath(new URL("../../examples/jobs/word-frequency.wat", import.meta.url));

let env: DevEnv;
let work: string;
let clientDir: string;

beforeAll(async () => {
  env = await startDevEnv();
  work = mkdtempSync(path.join(os.tmpdir(), "tp-job-cli-"));
  clientDir = path.join(work, "client");
}, 30_000);
afterAll(async () => {
  await env?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, ["--import", "tsx", CLI, "job", ...args, "--server", env.dev.server.address, "--key", env.dev.adminKeyFile, "--client-dir", clientDir], { env: { ...process.env, HOME: work } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}


describe("trustplane job", () => {
  it("encrypts, uploads, runs (stored and direct) and fetches results, keeping the DEK in the client directory", async () => {
    const plain = path.join(work, "tale.txt");
    writeFileSync(plain, "the cat and the dog and THE bird\n".repeat(100));
    const enc = await cli("encrypt", plain, path.join(work, "tale.tpev"));
    expect(enc.code, enc.stderr).toBe(0);
    expect(statSync(clientDir).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(clientDir, "dek.json")).mode & 0o777).toBe(0o600);
    const dek = Buffer.from((JSON.parse(readFileSync(path.join(clientDir, "dek.json"), "utf8")) as { dek: string }).dek, "base64");

    const up = await cli("upload", path.join(work, "tale.tpev"), "--tenant", "admin", "--name", "cli/tale.tpev", "--json");
    expect(up.code, up.stderr).toBe(0);
    expect(JSON.parse(up.stdout)).toMatchObject({ tenant: "admin", name: "cli/tale.tpev" });

    const stored = await cli("run", WAT, "--data", "admin/cli/tale.tpev", "--out", path.join(work, "counts.txt"), "--json");
    expect(stored.code, stored.stderr).toBe(0);
    expect(stored.stderr).toContain("pinned the server's CA keys");
    const counts = readFileSync(path.join(work, "counts.txt"), "utf8");
    expect(counts).toContain("the\t300");
    const result = (JSON.parse(stored.stdout) as { result: { tenant: string; name: string } }).result;
    expect(existsSync(path.join(clientDir, "otk-ledger.jsonl"))).toBe(true);
    expect(statSync(path.join(clientDir, "ca.json")).mode & 0o777).toBe(0o600);

    const fetched = await cli("result", `${result.tenant}/${result.name}`, "--out", path.join(work, "counts2.txt"));
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(readFileSync(path.join(work, "counts2.txt"), "utf8")).toBe(counts);

    const direct = await cli("run", WAT, "--direct", path.join(work, "tale.tpev"), "--returned", "--out", path.join(work, "counts3.txt"));
    expect(direct.code, direct.stderr).toBe(0);
    expect(readFileSync(path.join(work, "counts3.txt"), "utf8")).toBe(counts);

    // Nothing of the client's key material on the server's side.
    for (const f of filesUnder(env.config.dataDir)) {
      expect(path.basename(f)).not.toMatch(/^dek|otk-ledger/);
      const bytes = readFileSync(f);
      for (const needle of [dek, Buffer.from(dek.toString("base64")), Buffer.from(dek.toString("hex"))]) expect(bytes.includes(needle), f).toBe(false);
    }
  }, 120_000);

  it("refuses a client directory others can read, and a run without a DEK says what to do", async () => {
    const other = path.join(work, "loose");
    const loose = await run(process.execPath, ["--import", "tsx", CLI, "job", "run", WAT, "--data", "admin/x", "--client-dir", other, "--server", env.dev.server.address, "--key", env.dev.adminKeyFile]).catch((e: { code: number; stderr: string }) => e);
    expect((loose as { stderr: string }).stderr).toContain("DEK_FILE_MISSING");
    chmodSync(other, 0o755);
    const insecure = await run(process.execPath, ["--import", "tsx", CLI, "job", "encrypt", WAT, path.join(work, "x.tpev"), "--client-dir", other]).catch((e: { code: number; stderr: string }) => e);
    expect(insecure).toMatchObject({ code: 1 });
    expect((insecure as { stderr: string }).stderr).toContain("CLIENT_DIR_INSECURE");
  }, 60_000);
});
