// The carried-request workflow through the CLI, as people run it: the admin certifies an
// investigator and a technician; the investigator signs sealed requests into files; the
// technician submits them and brings back sealed results it cannot open; the investigator
// opens them and sees the host's signature verified.
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { generateSigningKey, signEnvelope } from "../../sdk/src/auth/index.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { HostKeyBinding, HostKeysServiceService, type GetHostKeysResponse } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HOST_KEY_BINDING_TYPE } from "../../sdk/src/privileged/index.js";
import { runCli } from "../support/cli.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

let env: DevEnv;
let dir = "";
const tp = (...args: string[]) => runCli(env, ...args);

/** A HostKeysService that answers with a host binding signed by its own CA key (and offers that key). */
async function rogueHostKeysServer(): Promise<{ address: string; close(): void }> {
  const rogueCa = generateSigningKey("Ed25519");
  const fakeHost = generateSigningKey("Ed25519");
  const server = new grpc.Server();
  server.addService(HostKeysServiceService, {
    getHostKeys: (_call: unknown, cb: (e: null, r: GetHostKeysResponse) => void) => {
      const binding = HostKeyBinding.fromPartial({ hostId: "dev-host-1", signingKeyId: fakeHost.keyId, signingJwk: JSON.stringify(fakeHost.publicJwk), sealingPublicKey: generateX25519KeyPair().publicKey, caKeyId: rogueCa.keyId });
      cb(null, { hosts: [{ hostId: "dev-host-1", binding: signEnvelope(HOST_KEY_BINDING_TYPE, HostKeyBinding.encode(binding).finish(), [rogueCa]), hostCertificate: undefined }], caJwks: [JSON.stringify(rogueCa.publicJwk)] });
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
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
    const stolen = await tp("privileged", "open", ...results, "--key", f("tech-recipient.jwk"));
    expect(stolen.code).not.toBe(0);
    expect(stolen.stderr).toContain("RESULT_SEAL_INVALID");
    const opened = await tp("privileged", "open", ...results, "--key", f("recipient.jwk"));
    expect(opened.code, opened.stderr).toBe(0);
    expect(opened.stdout).toContain("host signature verified");
    expect(opened.stdout).toContain("loadAverage");
    // The older spelling still works.
    expect((await tp("privileged", "open", ...results, "--recipient-key", f("recipient.jwk"), "--json")).code).toBe(0);
    // A server that answers host keys bound by another CA is not believed: the CA is pinned.
    const rogue = await rogueHostKeysServer();
    try {
      const fooled = await tp("privileged", "open", ...results, "--key", f("recipient.jwk"), "--server", rogue.address);
      expect(fooled.code).not.toBe(0);
      expect(fooled.stderr).toContain("HOST_KEYS_UNTRUSTED");
    } finally {
      rogue.close();
    }
    // Submitting the same file again (a retry) gets the stored sealed result; nothing runs twice.
    const again = await tp("privileged", "submit", ...requests, "--key", f("technician.jwk"), "--cert", f("technician.cert"), "--agent", agent, "--out", f("results2"));
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(readFileSync(path.join(f("results2"), readdirSync(f("results2"))[0]!), "utf8")).toBe(readFileSync(results[0]!, "utf8"));
    const audit = readFileSync(path.join(env.config.dataDir, "agent", "dev-host-1", "privileged-audit.jsonl"), "utf8");
    expect(audit).toContain("answered with the stored outcome; not executed again");
  });

  it("gives each subcommand its own --help", async () => {
    const subs = ["keygen", "certify", "sign", "submit", "open"];
    const outs = await Promise.all(subs.map((sub) => tp("privileged", sub, "--help")));
    for (const [i, sub] of subs.entries()) {
      expect(outs[i]!.code, outs[i]!.stderr).toBe(0);
      expect(outs[i]!.stdout).toContain(`usage: trustplane privileged ${sub} `);
      for (const other of subs.filter((o) => o !== sub)) expect(outs[i]!.stdout).not.toContain(`trustplane privileged ${other} `);
    }
    expect(outs[4]!.stdout).toContain("--key FILE");
    expect(outs[4]!.stdout).toContain("--out FILE");
    const all = await tp("privileged", "--help");
    for (const sub of subs) expect(all.stdout).toContain(`trustplane privileged ${sub} `);
  }, 120_000);
});
