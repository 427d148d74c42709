// Privileged-operations benchmarks (issue 5): a full privileged round trip (build + sign →
// agent verifies all checks → executes collect_host_diagnostics → host-signs + HPKE-seals →
// SDK opens + verifies) against an unsigned unary echo; and sealing a 64 MiB memory dump
// through the envelope format against raw node:crypto AES-256-GCM over the same bytes.
import * as grpc from "@grpc/grpc-js";
import { createCipheriv, randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateSigningKey, importSigningKey, issueCertificate } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { CallStatement, SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService, type EchoRequest, type EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { PrivilegedServiceService, SubmitStreamResponse } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { PrivilegedExecutor } from "../../server/src/privileged/executor/privileged-executor.js";
import { dumpFileStream } from "../../server/src/privileged/operations/guest-memory.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { buildPrivilegedRequest, openSealedResult, signPrivilegedRequest } from "../../sdk/src/privileged/index.js";
import { startDev } from "../../server/src/processes/dev-process.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { asyncOpsPerSecond, interleaved, result, type Benchmark } from "../harness.js";

const roundTrip: Benchmark = {
  name: "privileged.round-trip",
  description: "privileged collect_host_diagnostics round trip (sign → verify → execute → sign + seal → open) vs an unsigned unary echo, loopback",
  async run() {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-bench-priv-"));
    const dev = await startDev(loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0" } }), createLogger({ level: "silent" }));
    const admin = importSigningKey(JSON.parse(readFileSync(dev.adminKeyFile, "utf8")));
    const auth = createClient(AuthServiceService, dev.server.address, { key: admin });
    // The unsigned baseline: the same grpc-js stack, an echo handler with no verification.
    const server = new grpc.Server();
    const def = { echo: { ...AuthServiceService.echo, path: "/bench.Unsigned/Echo" } } as grpc.ServiceDefinition;
    server.addService(def, { echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoResponse>, cb: grpc.sendUnaryData<EchoResponse>) => cb(null, { message: call.request.message, principal: "", keyId: "", requestId: "" }) });
    const port = await new Promise<number>((res, rej) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const Unsigned = grpc.makeGenericClientConstructor(def, "U");
    const unsigned = new Unsigned(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as { echo(r: EchoRequest, cb: (e: unknown, r: EchoResponse) => void): void; close(): void };
    try {
      await auth.createPrincipal({ requestId: "bench-op", name: "bench-operator", kind: "user" });
      const key = generateSigningKey("Ed25519");
      const { certificate } = await auth.issueCertificate({ requestId: "bench-cert", principal: "bench-operator", publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: ["inspect"], hostPattern: "*", ttlSeconds: 3600 });
      const cert = SignedEnvelope.encode(certificate!).finish();
      const hostKey = importVerificationKey(dev.agent.signingKey.publicJwk);
      const agent = createClient(PrivilegedServiceService, dev.agent.address, { key, certificate: cert, targetHost: dev.agent.identity.hostId });
      const me = generateX25519KeyPair();
      const privileged = async () => {
        const req = buildPrivilegedRequest({ hostId: dev.agent.identity.hostId, operation: { collectHostDiagnostics: {} }, recipientPublicKey: me.publicKey });
        const envelope = signPrivilegedRequest(req, key, cert);
        const { result: sealed } = await agent.submit({ requestId: req.requestId, envelope });
        openSealedResult({ sealed: sealed!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey, hostId: dev.agent.identity.hostId, requestId: req.requestId });
      };
      const echo = () => new Promise<void>((res, rej) => unsigned.echo({ message: "x".repeat(64) }, (e) => (e ? rej(e) : res())));
      await asyncOpsPerSecond(privileged, 300, 8);
      const m = await interleaved(3, () => asyncOpsPerSecond(echo, 1500, 8), () => asyncOpsPerSecond(privileged, 1500, 8));
      agent.close();
      return [result({ name: this.name, value: m.value, baseline: m.baseline, unit: "ops/s", target: 0.5, note: "8 in flight; agent and server in this process" })];
    } finally {
      unsigned.close();
      server.forceShutdown();
      auth.close();
      await dev.shutdown();
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
