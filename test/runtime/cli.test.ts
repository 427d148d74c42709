// The trustplane CLI as a user runs it: key creation with safe file modes, clear usage errors,
// and `audit verify` catching a record edited or deleted behind the server's back.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startServer, type ServerHandle } from "../../server/src/processes/server-process.js";

const run = promisify(execFile);
const CLI = path.resolve("server/bin/trustplane.mjs");
const dir = mkdtempSync(path.join(os.tmpdir(), "tp-cli-"));

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, TRUSTPLANE_DATA_DIR: dir } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

let server: ServerHandle;

beforeAll(async () => {
  server = await startServer(loadConfig({ env: {}, flags: { dataDir: dir, listen: "127.0.0.1:0" } }), createLogger({ level: "silent" }));
});

afterAll(async () => {
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe("trustplane CLI", () => {
  it("creates a key file readable only by its owner", async () => {
    const out = path.join(dir, "k.jwk.json");
    const r = await cli("keys", "create", "--out", out, "--json");
    expect(r.code).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const printed = JSON.parse(r.stdout) as { keyId: string; publicJwk: Record<string, string> };
    expect(printed.publicJwk.d).toBeUndefined();
    expect(JSON.parse(readFileSync(out, "utf8")).d).toBeDefined();
  });

  it("explains a usage error with the reason code", async () => {
    const r = await cli("keys", "create", "--alg", "RSA", "--out", path.join(dir, "x"));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--alg must be one of");
    expect(r.stderr).toContain("CLI_USAGE");
  });

  it("makes signed calls with the admin key and prints tables", async () => {
    const who = await cli("whoami", "--server", server.address);
    expect(who.stdout).toContain("admin");
    const created = await cli("principal", "create", "bob", "--server", server.address);
    expect(created.code).toBe(0);
    const list = await cli("principal", "list", "--server", server.address);
    expect(list.stdout).toMatch(/NAME\s+KIND/);
    expect(list.stdout).toContain("bob");
  });

  it("audit verify catches records deleted from the end, against the server's checkpoint or a head kept elsewhere", async () => {
    expect((await cli("principal", "create", "carol", "--server", server.address)).code).toBe(0);
    const head = (await cli("audit", "head")).stdout.trim();
    expect(head).toMatch(/^\d+:[0-9a-f]{64}$/);
    // The server writes its checkpoint a moment after an append.
    const checkpoint = path.join(dir, "audit.head.json");
    for (let i = 0; i < 100 && !(existsSync(checkpoint) && readFileSync(checkpoint, "utf8").includes(head)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(readFileSync(checkpoint, "utf8")).toContain(head);
    expect(statSync(checkpoint).mode & 0o777).toBe(0o600);
    expect((await cli("audit", "verify")).stdout).toContain(`reaches the server's checkpoint at record ${head.split(":")[0]}`);

    const db = new Database(path.join(dir, "trustplane.db"));
    const last = db.prepare("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").get() as Record<string, unknown>;
    db.prepare("DELETE FROM audit_log WHERE seq = ?").run(last.seq);
    try {
      const cut = await cli("audit", "verify");
      expect(cut.code).toBe(3);
      expect(cut.stdout).toContain("deleted from the end");
      // Without the checkpoint the shorter chain is a valid chain: only a remembered head shows it…
      const saved = readFileSync(checkpoint);
      rmSync(checkpoint);
      expect((await cli("audit", "verify")).code).toBe(0);
      // …such as one an operator kept elsewhere.
      const witnessed = await cli("audit", "verify", "--expect-head", head);
      expect(witnessed.code).toBe(3);
      expect(witnessed.stdout).toContain("deleted from the end");
      writeFileSync(checkpoint, saved, { mode: 0o600 });
      const bad = await cli("audit", "verify", "--expect-head", "12:nothex");
      expect(bad.stderr).toContain("AUDIT_HEAD_INVALID");
    } finally {
      const cols = Object.keys(last);
      db.prepare(`INSERT INTO audit_log (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`).run(...cols.map((c) => last[c]));
      db.close();
    }
    expect((await cli("audit", "verify")).code).toBe(0);
  });

  it("audit verify passes on an intact log and fails on an edited or deleted record", async () => {
    const ok = await cli("audit", "verify");
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("intact");
    const db = new Database(path.join(dir, "trustplane.db"));
    db.prepare("UPDATE audit_log SET target = 'mallory' WHERE seq = (SELECT MIN(seq) FROM audit_log)").run();
    db.close();
    const edited = await cli("audit", "verify");
    expect(edited.code).toBe(3);
    expect(edited.stdout).toContain("BROKEN");
  });
});
