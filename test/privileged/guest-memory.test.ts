// Guest memory and hypervisor state of a real QEMU guest, end to end: a tiny-linux VM scheduled
// through VmService onto the agent's QEMU driver; an operator certified for `memory` reads a
// range through QMP pmemsave (inline) or streams a whole dump (pmemsave / dump-guest-memory)
// sealed with the envelope format into a file, checked against the host-signed trailer.
// query_hypervisor answers from QMP. A `lifecycle`-only operator and a key limited by
// max_memory_read are refused.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { PrivilegedServiceService } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HypervisorType, VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { buildPrivilegedRequest, openSealedResult, openSealedResultStream, signPrivilegedRequest, type PrivilegedOperation } from "../../sdk/src/privileged/index.js";
import { qemuAvailable } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { runCli } from "../support/cli.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const HOST = "dev-host-1";
let env: DevEnv;
let vmId = "";

async function operator(name: string, classes: string[], options: { name: string; value: string; critical: boolean }[] = []): Promise<{ key: SigningKey; cert: Uint8Array }> {
  const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
  try {
    await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user" });
    const key = generateSigningKey();
    const { certificate } = await auth.issueCertificate({ requestId: `c-${name}`, principal: name, publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: classes, hostPattern: HOST, ttlSeconds: 600, options });
    return { key, cert: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}

type Operator = { key: SigningKey; cert: Uint8Array };

/** Streams a request's result into `out` through SubmitStream and opens it. */
async function streamed(op: Operator, operation: Partial<PrivilegedOperation>, out: string) {
  const me = generateX25519KeyPair();
  const req = buildPrivilegedRequest({ hostId: HOST, operation, recipientPublicKey: me.publicKey });
  const envelope = signPrivilegedRequest(req, op.key, op.cert);
  const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: op.key, certificate: op.cert, targetHost: HOST });
  try {
    return await openSealedResultStream({
      parts: agent.submitStream({ requestId: req.requestId, envelope }),
      recipientPrivateKey: me.privateKey,
      requestEnvelope: SignedEnvelope.encode(envelope).finish(),
      hostKey: importVerificationKey(env.dev.agent.signingKey.publicJwk),
      hostId: HOST,
      requestId: req.requestId,
      outFile: out,
    });
  } finally {
    agent.close();
  }
}

/** Dump or read files QEMU wrote that are still on the agent (there should be none). */
function leftovers(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (/^mem(dump|read)-/.test(e.name)) found.push(path.join(dir, e.name));
    }
  };
  walk(path.join(env.config.dataDir, "agent"));
  return found;
}

describe.skipIf(!qemuAvailable())("privileged guest memory on QEMU", () => {
  beforeAll(async () => {
    process.env.TRUSTPLANE_VM_DRIVERS = "sandbox,qemu";
    env = await startDevEnv();
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const { vm } = await vms.createVm({ requestId: "mem-vm", name: "evidence", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    vmId = vm!.vmId;
    expect(vm!.hypervisor).toBe(HypervisorType.HYPERVISOR_TYPE_QEMU);
    for (let i = 0; i < 900; i++) {
      const cur = (await vms.getVm({ vmId })).vm!;
      if (cur.state === VmState.VM_STATE_RUNNING) break;
      if (cur.state === VmState.VM_STATE_FAILED) throw new Error(cur.failureReason);
      await new Promise((r) => setTimeout(r, 100));
    }
    vms.close();
  }, 150_000);

  afterAll(async () => {
    delete process.env.TRUSTPLANE_VM_DRIVERS;
    if (env) {
      const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
      await vms.terminateVm({ requestId: "mem-vm-term", vmId }).catch(() => undefined);
      vms.close();
      await env.stop();
    }
  }, 60_000);

  it("reads guest physical memory through QMP, sealed to the memory-certified operator", async () => {
    const security = await operator("security", ["memory"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0xf0000, length: 4096 } }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, security.key, security.cert);
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: security.key, certificate: security.cert, targetHost: HOST });
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    agent.close();
    const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: importVerificationKey(env.dev.agent.signingKey.publicJwk), hostId: HOST, requestId: req.requestId });
    expect(opened.data.length).toBe(4096);
    // The BIOS lives at 0xF0000: real guest memory is not all zeros.
    expect(opened.data.some((b) => b !== 0)).toBe(true);
  });

  it("refuses a memory read to an operator certified only for lifecycle", async () => {
    const support = await operator("support", ["lifecycle"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0, length: 16 } }, recipientPublicKey: me.publicKey });
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: support.key, certificate: support.cert, targetHost: HOST });
    try {
      await agent.submit({ requestId: req.requestId, envelope: signPrivilegedRequest(req, support.key, support.cert) });
      throw new Error("unexpectedly succeeded");
    } catch (e) {
      expect(e).toBeInstanceOf(TrustplaneError);
      expect([(e as TrustplaneError).status, (e as TrustplaneError).reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    } finally {
      agent.close();
    }
  });

  it("streams a whole raw dump sealed with the envelope format into a file the trailer vouches for", async () => {
    const security = await operator("security-dump", ["memory"]);
    const out = path.join(env.config.dataDir, "evidence.raw");
    const opened = await streamed(security, { dumpGuestMemory: { vmId, format: "raw" } }, out);
    const size = 128 * 1024 * 1024;
    expect(opened.result.memoryDump).toMatchObject({ vmId, format: "raw", guestMemoryBytes: size });
    expect(opened.result.streamSize).toBe(size);
    expect(opened.bytes).toBe(size);
    expect(statSync(out).size).toBe(size);
    expect(statSync(out).mode & 0o077).toBe(0);
    const onDisk = createHash("sha256").update(readFileSync(out)).digest();
    expect(Buffer.from(opened.trailer!.streamSha256).equals(onDisk)).toBe(true);
    // The BIOS region in the dump is the same memory a range read sees.
    const bios = readFileSync(out).subarray(0xf0000, 0xf0000 + 4096);
    expect(bios.some((b) => b !== 0)).toBe(true);
    expect(leftovers()).toEqual([]);
  }, 120_000);

  it("streams an ELF dump (dump-guest-memory)", async () => {
    const security = await operator("security-elf", ["memory"]);
    const out = path.join(env.config.dataDir, "evidence.elf");
    const opened = await streamed(security, { dumpGuestMemory: { vmId, format: "elf" } }, out);
    expect(opened.result.memoryDump?.format).toBe("elf");
    expect(readFileSync(out).subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    expect(statSync(out).size).toBe(opened.bytes);
    expect(opened.bytes).toBeGreaterThan(128 * 1024 * 1024);
    expect(leftovers()).toEqual([]);
  }, 120_000);

  it("sends a read above the inline limit through the stream, and refuses it as a unary Submit", async () => {
    const security = await operator("security-big-read", ["memory"]);
    const out = path.join(env.config.dataDir, "range.bin");
    const opened = await streamed(security, { readGuestMemory: { vmId, address: 0, length: 2 * 1024 * 1024 } }, out);
    expect(opened.bytes).toBe(2 * 1024 * 1024);
    expect(readFileSync(out).subarray(0xf0000, 0xf1000).some((b) => b !== 0)).toBe(true);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0, length: 2 * 1024 * 1024 } }, recipientPublicKey: me.publicKey });
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: security.key, certificate: security.cert, targetHost: HOST });
    const err = await agent.submit({ requestId: req.requestId, envelope: signPrivilegedRequest(req, security.key, security.cert) }).then(
      () => undefined,
      (e: TrustplaneError) => e,
    );
    agent.close();
    expect([err?.status, err?.reason]).toEqual(["FAILED_PRECONDITION", "STREAM_REQUIRED"]);
    expect(leftovers()).toEqual([]);
  }, 60_000);

  it("answers a retried stream (the same envelope again) with STREAM_ALREADY_SENT and reads nothing twice", async () => {
    const security = await operator("security-retry", ["memory"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0, length: 2 * 1024 * 1024 } }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, security.key, security.cert);
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: security.key, certificate: security.cert, targetHost: HOST });
    try {
      let parts = 0;
      for await (const _ of agent.submitStream({ requestId: req.requestId, envelope })) parts++;
      expect(parts).toBeGreaterThan(2);
      const err = await (async () => {
        for await (const _ of agent.submitStream({ requestId: req.requestId, envelope })) void _;
      })().then(
        () => undefined,
        (e: TrustplaneError) => e,
      );
      expect([err?.status, err?.reason]).toEqual(["FAILED_PRECONDITION", "STREAM_ALREADY_SENT"]);
      expect(err?.message).toContain("sign a new request");
    } finally {
      agent.close();
    }
    const audit = readFileSync(path.join(env.config.dataDir, "agent", HOST, "privileged-audit.jsonl"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { requestId: string; outcome: string });
    expect(audit.filter((a) => a.requestId === req.requestId).map((a) => a.outcome)).toEqual(["attempt", "ok", "STREAM_ALREADY_SENT"]);
    expect(leftovers()).toEqual([]);
  }, 60_000);

  it("refuses a dump larger than the key's max_memory_read", async () => {
    const limited = await operator("security-limited", ["memory"], [{ name: "max_memory_read", value: String(64 * 1024 * 1024), critical: true }]);
    const err = await streamed(limited, { dumpGuestMemory: { vmId, format: "raw" } }, path.join(env.config.dataDir, "nope.raw")).then(
      () => undefined,
      (e: TrustplaneError) => e,
    );
    expect([err?.status, err?.reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    expect(err?.message).toContain("max_memory_read");
    expect(readdirSync(env.config.dataDir).filter((n) => n.includes("nope.raw"))).toEqual([]);
  });

  it("dumps through the CLI: an investigator signs a sealed request, a technician carries it, the investigator opens --out", async () => {
    const tp = (...args: string[]) => runCli(env, ...args);
    const f = (n: string) => path.join(env.config.dataDir, "cli-dump", n);
    mkdirSync(f(""), { recursive: true });
    for (const [who, cls] of [
      ["cli-investigator", "memory"],
      ["cli-technician", "carry"],
    ] as const) {
      expect((await tp("keys", "create", "--out", f(`${who}.jwk`))).code).toBe(0);
      expect((await tp("principal", "create", who)).code).toBe(0);
      const cert = await tp("privileged", "certify", who, "--public-key", f(`${who}.jwk`), "--class", cls, "--hosts", HOST, "--out", f(`${who}.cert`));
      expect(cert.code, cert.stderr).toBe(0);
    }
    expect((await tp("privileged", "keygen", "--out", f("recipient.jwk"))).code).toBe(0);
    const sign = await tp("privileged", "sign", "--host", HOST, "--op", "dump-guest-memory", "--vm", vmId, "--format", "raw", "--key", f("cli-investigator.jwk"), "--cert", f("cli-investigator.cert"), "--recipient", f("recipient.jwk.pub"), "--seal", "--out", f("requests"));
    expect(sign.code, sign.stderr).toBe(0);
    const requests = readdirSync(f("requests")).map((n) => path.join(f("requests"), n));
    const submit = await tp("privileged", "submit", ...requests, "--key", f("cli-technician.jwk"), "--cert", f("cli-technician.cert"), "--agent", `${HOST}=${env.dev.agent.address}`, "--out", f("results"));
    expect(submit.code, submit.stderr + submit.stdout).toBe(0);
    const resultFiles = readdirSync(f("results"));
    // The result file names the sealed header; the dump's envelope chunks sit beside it.
    expect(resultFiles.some((n) => n.endsWith(".parts"))).toBe(true);
    const result = path.join(f("results"), resultFiles.find((n) => !n.endsWith(".parts"))!);
    // The carrier's own key opens nothing.
    expect((await tp("privileged", "keygen", "--out", f("tech-recipient.jwk"))).code).toBe(0);
    const stolen = await tp("privileged", "open", result, "--key", f("tech-recipient.jwk"), "--out", f("stolen.raw"));
    expect(stolen.code).not.toBe(0);
    expect(existsSync(f("stolen.raw"))).toBe(false);
    const opened = await tp("privileged", "open", result, "--key", f("recipient.jwk"), "--out", f("evidence.raw"), "--json");
    expect(opened.code, opened.stderr).toBe(0);
    const shown = JSON.parse(opened.stdout) as { streamSha256: string; streamSize: number; memoryDump: { vmId: string } }[];
    expect(shown[0]).toMatchObject({ streamSize: 128 * 1024 * 1024, memoryDump: { vmId } });
    const dump = readFileSync(f("evidence.raw"));
    expect(dump.length).toBe(128 * 1024 * 1024);
    expect(createHash("sha256").update(dump).digest("hex")).toBe(shown[0]!.streamSha256);
    expect(dump.subarray(0xf0000, 0xf1000).some((b) => b !== 0)).toBe(true);
    expect(leftovers()).toEqual([]);
  }, 240_000);

  it("answers query_hypervisor from QMP (status, version, devices)", async () => {
    const inspector = await operator("inspector", ["inspect"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { queryHypervisor: { vmId } }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, inspector.key, inspector.cert);
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: inspector.key, certificate: inspector.cert, targetHost: HOST });
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    agent.close();
    const status = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: importVerificationKey(env.dev.agent.signingKey.publicJwk), hostId: HOST, requestId: req.requestId }).hypervisorStatus!;
    expect(status).toMatchObject({ vmId, status: "running", running: true });
    expect(status.hypervisorVersion).toMatch(/^qemu \d+\.\d+\.\d+/);
    // q35 always has a host bridge and an LPC/ISA bridge; the guest has virtio devices.
    expect(status.devices.length).toBeGreaterThan(2);
    expect(status.devices.join("\n")).toMatch(/Host bridge/i);
  });
});
