// The carried-request workflow through the CLI, as people run it: the admin certifies an
// investigator and a technician; the investigator signs sealed requests into files; the
// technician submits them and brings back sealed results it cannot open; the investigator
// opens them and sees the host's signature verified.
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const run = promisify(execFile);
const CLI = path.resolve("server/bin/trustplane.mjs");
let env: DevEnv;
let dir = "";

async function tp(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, TRUSTPLANE_DATA_DIR: env.config.dataDir, TRUSTPLANE_SERVER: env.dev.server.address } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

beforeAll(async () => {
  env = await startDevEnv();
  dir = path.join(env.config.dataDir, "work");
});
afterAll(async () => {
  await env?.stop();
});

describe("trustplane privileged", () => {
  it("signs, carries and opens sealed requests through files", { timeout: 240_000 }, async () => {
    const f = (n: string) => path.join(dir, n);
    for (const [who, classes] of [
      ["investigator", ["inspect"]],
      ["technician", ["carry"]],
    ] as const) {
      expect((await tp("keys", "create", "--out", f(`${who}.jwk`))).code).toBe(0);
      expect((await tp("principal", "create", who)).code).toBe(0);
      const cert = await tp("privileged", "certify", who, "--public-key", f(`${who}.jwk`), ...classes.flatMap((c) => ["--class", c]), "--hosts", "dev-host-*", "--out", f(`${who}.cert`));
      expect(cert.code, cert.stderr).toBe(0);
    }
    expect((await tp("privileged", "keygen", "--out", f("recipient.jwk"))).code).toBe(0);
    const sign = await tp("privileged", "sign", "--host", "dev-host-1", "--op", "collect-host-diagnostics", "--key", f("investigator.jwk"), "--cert", f("investigator.cert"), "--recipient", f("recipient.jwk.pub"), "--seal", "--out", f("requests"));
    expect(sign.code, sign.stderr).toBe(0);
    const requests = readdirSync(f("requests")).map((n) => path.join(f("requests"), n));
    const agent = `dev-host-1=${env.dev.agent.address}`;
    const submit = await tp("privileged", "submit", ...requests, "--key", f("technician.jwk"), "--cert", f("technician.cert"), "--agent", agent, "--out", f("results"));
    expect(submit.code, submit.stderr + submit.stdout).toBe(0);
    expect(submit.stdout).toMatch(/dev-host-1\s+collect-host-diagnostics\s+sealed result/);
    const results = readdirSync(f("results")).map((n) => path.join(f("results"), n));
    // The technician's own X25519 key cannot open what it carried.
    expect((await tp("privileged", "keygen", "--out", f("tech-recipient.jwk"))).code).toBe(0);
    const stolen = await tp("privileged", "open", ...results, "--recipient-key", f("tech-recipient.jwk"));
    expect(stolen.code).not.toBe(0);
    expect(stolen.stderr).toContain("RESULT_SEAL_INVALID");
    const opened = await tp("privileged", "open", ...results, "--recipient-key", f("recipient.jwk"));
    expect(opened.code, opened.stderr).toBe(0);
    expect(opened.stdout).toContain("host signature verified");
    expect(opened.stdout).toContain("loadAverage");
    // Submitting the same file again is a replay.
    const again = await tp("privileged", "submit", ...requests, "--key", f("technician.jwk"), "--cert", f("technician.cert"), "--agent", agent, "--out", f("results2"));
    expect(again.stdout).toContain("refused: NONCE_REPLAYED");
  });
});
