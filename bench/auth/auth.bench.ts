// Foundation benchmarks (issue 2): signed vs unsigned unary calls on loopback, our HMAC call
// signing vs @smithy/signature-v4 on an equivalent request, and our Ed25519 sign+verify per
// call vs raw node:crypto Ed25519 over the same bytes.
import type { JsonWebKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { spawn } from "node:child_process";
import { generateKeyPairSync, sign, verify } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { canonicalEncode, generateSigningKey, importVerificationKey, signCall } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, EchoRequest, type EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { asyncOpsPerSecond, interleaved, opsPerSecond, result, type Benchmark } from "../harness.js";
import { UNSIGNED_ECHO_SERVICE } from "./echo-bench-server.js";

const REQUEST: EchoRequest = { message: "the quick brown fox jumps over the lazy dog ".repeat(4) };

interface EchoServer {
  address: string;
  /** CPU time the server process has used so far, in µs. */
  cpu(): Promise<number>;
  stop(): void;
}

async function startEchoServer(jwks: JsonWebKey[]): Promise<EchoServer> {
  const script = fileURLToPath(new URL("./echo-bench-server.ts", import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(jwks)], { stdio: ["pipe", "pipe", "inherit"] });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d: string) => {
    pending += d;
    for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const nextLine = () => new Promise<string>((resolve, reject) => {
    const l = lines.shift();
    if (l !== undefined) return resolve(l);
    waiting.push(resolve);
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  const port = Number(/PORT (\d+)/.exec(await nextLine())![1]);
  return {
    address: `127.0.0.1:${port}`,
    async cpu() {
      child.stdin.write("cpu\n");
      return Number((await nextLine()).split(" ")[1]);
    },
    stop: () => child.stdin.end(),
  };
}

/** CPU µs per call in this process (client) and in the server process. */
async function cpuPerCall(server: EchoServer, call: () => Promise<unknown>, n: number): Promise<{ client: number; server: number }> {
  const s0 = await server.cpu();
  const c0 = process.cpuUsage();
  let i = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (i++ < n) await call();
  }));
  const c = process.cpuUsage(c0);
  return { client: (c.user + c.system) / n, server: ((await server.cpu()) - s0) / n };
}

async function signedVsUnsignedRun(name: string, alg: "Ed25519" | "HS256", target: number, note: string) {
  const key = generateSigningKey(alg);
  const server = await startEchoServer([key.publicJwk]);
  const signed = createClient(AuthServiceService, server.address, { key });
  const Unsigned = grpc.makeGenericClientConstructor(UNSIGNED_ECHO_SERVICE, "UnsignedEcho");
  const unsigned = new Unsigned(server.address, grpc.credentials.createInsecure()) as unknown as {
    echo(req: EchoRequest, cb: (e: grpc.ServiceError | null, r: EchoResponse) => void): void;
    close(): void;
  };
  const callUnsigned = () => new Promise<EchoResponse>((res, rej) => unsigned.echo(REQUEST, (e, r) => (e ? rej(e) : res(r))));
  try {
    await asyncOpsPerSecond(callUnsigned, 500, 16);
    await asyncOpsPerSecond(() => signed.echo(REQUEST), 500, 16);
    const m = await interleaved(3, () => asyncOpsPerSecond(callUnsigned, 2000, 16), () => asyncOpsPerSecond(() => signed.echo(REQUEST), 2000, 16));
    const cu = await cpuPerCall(server, callUnsigned, 3000);
    const cs = await cpuPerCall(server, () => signed.echo(REQUEST), 3000);
    const cpu = `CPU µs/call client ${cu.client.toFixed(0)}→${cs.client.toFixed(0)}, server ${cu.server.toFixed(0)}→${cs.server.toFixed(0)}`;
    return result({ name, value: m.value, baseline: m.baseline, unit: "calls/s", target, note: `${note}; ${cpu}` });
  } finally {
    signed.close();
    unsigned.close();
    server.stop();
  }
}

const signedVsUnsigned: Benchmark = {
  name: "auth.signed-unary-throughput",
  description: "signed Echo (SDK signs, server verifies the raw bytes before decoding) vs unsigned Echo on the same server, loopback, 16 in flight",
  async run() {
    return [
      await signedVsUnsignedRun(`${this.name}.hmac`, "HS256", 0.85, "HMAC-SHA256 (service-to-service keys)"),
      await signedVsUnsignedRun(`${this.name}.ed25519`, "Ed25519", 0.85, "Ed25519: one server-side verify costs about one whole unsigned call"),
    ];
  },
};

const hmacVsSigV4: Benchmark = {
  name: "auth.hmac-signing-vs-sigv4",
  description: "HMAC-SHA256 call signing (statement + PAE + HMAC) vs @smithy/signature-v4 signing the same request",
  async run() {
    const key = generateSigningKey("HS256");
    const body = canonicalEncode(EchoRequest, REQUEST);
    const sigv4 = new SignatureV4({
      credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
      region: "us-east-1",
      service: "trustplane",
      sha256: Hash.bind(null, "sha256"),
    });
    const request = () =>
      new HttpRequest({
        method: "POST",
        protocol: "https:",
        hostname: "trustplane.example",
        path: "/trustplane.auth.v1.AuthService/Echo",
        headers: { host: "trustplane.example", "content-type": "application/grpc" },
        body,
      });
    const sigv4Rate = async (ms: number) => {
      let n = 0;
      const start = performance.now();
      while (performance.now() - start < ms) {
        await sigv4.sign(request());
        n++;
      }
      return (n * 1000) / (performance.now() - start);
    };
    const ours = () => opsPerSecond(() => signCall({ method: "/trustplane.auth.v1.AuthService/Echo", requestBytes: canonicalEncode(EchoRequest, REQUEST), key }), 1000);
    await sigv4Rate(300);
    ours();
    const m = await interleaved(3, () => sigv4Rate(1000), ours);
    return [result({ name: this.name, value: m.value, baseline: m.baseline, unit: "signs/s", target: 1.0, note: "target: faster than SigV4" })];
  },
};

const ed25519PerCall: Benchmark = {
  name: "auth.ed25519-sign-verify-per-call",
  description: "our per-call Ed25519 sign+verify (encode, statement, PAE, sign, verify, digest) vs raw node:crypto sign+verify of the request bytes",
  async run() {
    const key = generateSigningKey("Ed25519");
    const verification = importVerificationKey(key.publicJwk);
    const method = "/trustplane.auth.v1.AuthService/Echo";
    const verifier = new CallVerifier({
      keys: { resolve: async () => ({ principal: "bench", key: verification, revoked: false, roles: [] }) },
      caKeys: () => [],
      nonces: new MemoryNonceStore(),
      policy: { authorize: async () => true },
    });
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const bytes = canonicalEncode(EchoRequest, REQUEST);
    const raw = () => {
      const sig = sign(null, bytes, privateKey);
      if (!verify(null, bytes, publicKey, sig)) throw new Error("raw verify failed");
    };
    const ours = async (ms: number) => {
      let n = 0;
      const start = performance.now();
      while (performance.now() - start < ms) {
        const requestBytes = canonicalEncode(EchoRequest, REQUEST);
        const s = signCall({ method, requestBytes, key });
        const md = new grpc.Metadata();
        md.set("tp-statement-bin", Buffer.from(s.statement));
        md.set("tp-signature-bin", Buffer.from(s.signature));
        md.set("tp-key-id", s.keyId);
        await verifier.verify(method, md, requestBytes);
        n++;
      }
      return (n * 1000) / (performance.now() - start);
    };
    raw();
    await ours(200);
    const m = await interleaved(3, () => opsPerSecond(raw, 1000), () => ours(1000));
    return [result({ name: this.name, value: m.value, baseline: m.baseline, unit: "calls/s", target: 0.8 })];
  },
};

export const AUTH_BENCHMARKS: Benchmark[] = [signedVsUnsigned, hmacVsSigV4, ed25519PerCall];
