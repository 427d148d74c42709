// Privileged-operations benchmarks (issue 5): a full privileged round trip (build + sign →
// agent verifies all checks → executes collect_host_diagnostics → host-signs + HPKE-seals →
// SDK opens + verifies) against an unsigned unary echo; and sealing a 64 MiB memory dump
// through the envelope format against raw node:crypto AES-256-GCM over the same bytes.
import * as grpc from "@grpc/grpc-js";
import { spawn } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { generateSigningKey, importSigningKey, issueCertificate } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair, importX25519RecipientKey } from "../../sdk/src/envelope/index.js";
import { CallStatement, SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService, type EchoRequest, type EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { PrivilegedServiceService, SubmitStreamResponse } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { PrivilegedExecutor } from "../../server/src/privileged/executor/privileged-executor.js";
import { dumpFileStream } from "../../server/src/privileged/operations/guest-memory.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { buildPrivilegedRequest, openSealedResult, signPrivilegedRequest } from "../../sdk/src/privileged/index.js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { asyncOpsPerSecond, interleaved, result, type Benchmark } from "../harness.js";
import { UNSIGNED_ECHO_SERVICE } from "../auth/echo-bench-server.js";
import { childLines } from "../child-lines.js";
import { BENCH_HOST_ID } from "./privileged-bench-process.js";

interface BenchChild {
  /** The words of the child's READY line. */
  ready: string[];
  /** CPU time the child has used so far, in µs. */
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

/** A bench child process (privileged-bench-process.ts) speaking one line per answer on stdout. */
async function child(args: string[]): Promise<BenchChild> {
  const script = fileURLToPath(new URL("./privileged-bench-process.ts", import.meta.url));
  const proc = spawn(process.execPath, ["--import", "tsx", script, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const nextLine = childLines(proc);
  const ready = /^READY (.*)$/.exec(await nextLine());
  if (!ready) throw new Error(`bench ${args[0]} did not start`);
  return {
    ready: ready[1]!.split(" "),
    async cpu() {
      proc.stdin.write("cpu\n");
      return Number((await nextLine()).split(" ")[1]);
    },
    async stop() {
      proc.stdin.end();
      await exited;
    },
  };
}

/** CPU µs per call in this process (the client), the agent and the server, 8 in flight. */
async function cpuPerCall(call: () => Promise<unknown>, n: number, agent: BenchChild, server: BenchChild): Promise<string> {
  const [a0, s0] = [await agent.cpu(), await server.cpu()];
  const c0 = process.cpuUsage();
  let i = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (i++ < n) await call();
  }));
  const c = process.cpuUsage(c0);
  const [a1, s1] = [await agent.cpu(), await server.cpu()];
  return `client ${((c.user + c.system) / n).toFixed(0)}, agent ${((a1 - a0) / n).toFixed(0)}, server ${((s1 - s0) / n).toFixed(0)}`;
}

const roundTrip: Benchmark = {
  name: "privileged.round-trip",
  description: "privileged collect_host_diagnostics round trip (sign → verify → execute → durable audit → sign + seal → open) vs an unsigned unary echo served by the agent's own process, loopback",
  async run() {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-priv-"));
    // Client (this process), server and agent each on their own event loop, as deployed.
    const server = await child(["server", dataDir]);
    let agentProcess: Awaited<ReturnType<typeof child>> | undefined;
    const admin = importSigningKey(JSON.parse(readFileSync(path.join(dataDir, "admin.jwk.json"), "utf8")));
    const auth = createClient(AuthServiceService, server.ready[0]!, { key: admin });
    try {
      const { joinToken } = await auth.createJoinToken({ requestId: "bench-join", hostId: BENCH_HOST_ID, ttlSeconds: 600 });
      agentProcess = await child(["agent", dataDir, server.ready[0]!, joinToken]);
      const [agentAddress, echoAddress, hostJwk] = agentProcess.ready as [string, string, string];
      await auth.createPrincipal({ requestId: "bench-op", name: "bench-operator", kind: "user" });
      const key = generateSigningKey("Ed25519");
      const { certificate } = await auth.issueCertificate({ requestId: "bench-cert", principal: "bench-operator", publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: ["inspect"], hostPattern: "*", ttlSeconds: 3600 });
      const cert = SignedEnvelope.encode(certificate!).finish();
      const hostKey = importVerificationKey(hostJwk);
      const agent = createClient(PrivilegedServiceService, agentAddress, { key, certificate: cert, targetHost: BENCH_HOST_ID });
      const Unsigned = grpc.makeGenericClientConstructor(UNSIGNED_ECHO_SERVICE, "UnsignedEcho");
      const unsigned = new Unsigned(echoAddress, grpc.credentials.createInsecure()) as unknown as { echo(r: EchoRequest, cb: (e: unknown, r: EchoResponse) => void): void; close(): void };
      const me = generateX25519KeyPair();
      // The SDK's way to open many results with one key: imported once.
      const recipient = importX25519RecipientKey(me.privateKey);
      const privileged = async () => {
        const req = buildPrivilegedRequest({ hostId: BENCH_HOST_ID, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
        const envelope = signPrivilegedRequest(req, key, cert);
        const { result: sealed } = await agent.submit({ requestId: req.requestId, envelope });
        openSealedResult({ sealed: sealed!, recipientPrivateKey: recipient, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey, hostId: BENCH_HOST_ID, requestId: req.requestId });
      };
      const echo = () => new Promise<void>((res, rej) => unsigned.echo({ message: "x".repeat(64) }, (e) => (e ? rej(e) : res())));
      try {
        await asyncOpsPerSecond(echo, 300, 8);
        await asyncOpsPerSecond(privileged, 500, 8);
        const m = await interleaved(3, () => asyncOpsPerSecond(echo, 2000, 8), () => asyncOpsPerSecond(privileged, 2000, 8));
        const cpu = `CPU µs/call echo ${await cpuPerCall(echo, 2000, agentProcess, server)}; privileged ${await cpuPerCall(privileged, 500, agentProcess, server)}`;
        return [result({ name: this.name, value: m.value, baseline: m.baseline, unit: "ops/s", target: 0.5, note: `8 in flight; client, server and agent in separate processes, echo served by the agent process; ${cpu}` })];
      } finally {
        agent.close();
        unsigned.close();
      }
    } finally {
      auth.close();
      await agentProcess?.stop();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};

const sealDump: Benchmark = {
  name: "privileged.seal-64mib-dump",
  description:
    "the agent's real streamed-dump path for 64 MiB (executor SubmitStream: dump file read, SHA-256, envelope format in HPKE recipient mode, signed header and trailer, parts encoded) vs raw AES-256-GCM over the same bytes in 1 MiB chunks",
  async run() {
    const chunk = 1024 * 1024;
    const dump = randomBytes(64 * chunk);
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-dump-"));
    try {
      // What QEMU's pmemsave leaves in the VM's directory; the executor streams it from there.
      const source = path.join(dir, "memdump.bin");
      writeFileSync(source, dump);
      const ca = generateSigningKey("Ed25519");
      const operatorKey = generateSigningKey("Ed25519");
      const cert = SignedEnvelope.encode(
        issueCertificate(ca, { principal: "bench", publicKeyJwk: JSON.stringify(operatorKey.publicJwk), operationClasses: ["memory"], hostPattern: "bench-host", notBeforeMs: Date.now() - 60_000, notAfterMs: Date.now() + 3_600_000 }),
      ).finish();
      const caller = { principal: "bench", keyId: operatorKey.keyId, roles: [], statement: CallStatement.fromPartial({}) };
      const executor = new PrivilegedExecutor({
        hostId: "bench-host",
        hostKey: generateSigningKey("Ed25519"),
        sealingPrivateKey: generateX25519KeyPair().privateKey,
        caKeys: () => [importVerificationKey(ca.publicJwk)],
        nonces: new MemoryNonceStore(),
        // The registry's dump without QMP: a copy of the dump file, streamed and removed as the real one is.
        operations: {
          run: async () => {
            const copy = prepared!;
            return { memoryDump: { vmId: "vm", format: "raw", guestMemoryBytes: dump.length }, stream: dumpFileStream(copy, dump.length) };
          },
        },
        audit: { record: async () => undefined },
      });
      let prepared: string | undefined;
      const recipient = generateX25519KeyPair();
      const raw = () => {
        const t0 = performance.now();
        const key = randomBytes(32);
        for (let off = 0; off < dump.length; off += chunk) {
          const c = createCipheriv("aes-256-gcm", key, randomBytes(12));
          c.update(dump.subarray(off, off + chunk));
          c.final();
          c.getAuthTag();
        }
        return (dump.length / (performance.now() - t0)) * 1000;
      };
      const sealed = async () => {
        const req = buildPrivilegedRequest({ hostId: "bench-host", operation: { dumpGuestMemory: { vmId: "vm", format: "raw" } }, recipientPublicKey: recipient.publicKey });
        const envelope = SignedEnvelope.encode(signPrivilegedRequest(req, operatorKey, cert)).finish();
        // The copy sits in the page cache as what QEMU just wrote does; only the streaming is timed.
        prepared = path.join(dir, `memdump-${randomBytes(4).toString("hex")}.bin`);
        copyFileSync(source, prepared);
        const t0 = performance.now();
        let n = 0;
        for await (const part of executor.executeStream(envelope, caller)) n += SubmitStreamResponse.encode(part).finish().length;
        if (n < dump.length) throw new Error("short stream");
        return (dump.length / (performance.now() - t0)) * 1000;
      };
      raw();
      await sealed();
      const m = await interleaved(5, raw, sealed);
      return [result({ name: this.name, value: m.value / 2 ** 20, baseline: m.baseline / 2 ** 20, unit: "MiB/s", target: 0.7, note: "includes the file read, SHA-256 for the trailer and part encoding" })];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export const PRIVILEGED_BENCHMARKS: Benchmark[] = [roundTrip, sealDump];
