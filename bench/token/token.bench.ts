// Token area benchmarks (issue 3): the metadata token endpoint on a cache hit vs a bare
// node:http handler returning the same JSON (load from a separate process, p99 at 64
// clients); minting at the authority over gRPC vs an unsigned Echo on the same server; and
// 200 VMs refreshing together costing at most one upstream mint per (VM, account, scopes).
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { generateSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, type EchoRequest, type EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { AccessTokenMinter } from "../../server/src/token/authority/access-token-minter.js";
import { InMemorySigningKeyStore, SigningKeyRing } from "../../server/src/token/authority/signing-keys.js";
import type { TokenUpstream } from "../../server/src/token/agent/token-cache.js";
import { VmAuthorizationProcess } from "../../server/src/token/agent/vm-authorization-process.js";
import { HostMintSession } from "../../server/src/token/agent/host-mint-session.js";
import { MintBatcher } from "../../server/src/token/agent/mint-batcher.js";
import { openSealedToken } from "../../server/src/token/authority/host-token-sealer.js";
import { exportX25519PublicJwk, generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import { asyncOpsPerSecond, interleaved, result, type Benchmark, type BenchResult } from "../harness.js";
import { childLines } from "../child-lines.js";

const SA = "bench@p.trustplane";
const TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token";

function child(script: string, args: string[] = []): { proc: ChildProcess; next: () => Promise<string> } {
  const proc = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL(script, import.meta.url)), ...args], { stdio: ["pipe", "pipe", "inherit"] });
  return { proc, next: childLines(proc) };
}

async function authority(now: () => number = Date.now) {
  // The minter and the agents share one clock, so moving it moves token lifetimes too.
  const keys = await SigningKeyRing.open({ store: new InMemorySigningKeyStore(), maxTokenTtlSeconds: 3600, now });
  const minter = new AccessTokenMinter({ keys, issuer: "https://bench.trustplane", now });
  let mints = 0;
  const upstream: TokenUpstream = {
    async mintAccessToken(req) {
      mints++;
      const m = await minter.mintAccessToken({ serviceAccount: SA, scopes: req.scopes?.length ? req.scopes : ["storage.read"], audience: "https://storage.bench", vmId: req.vmId, hostId: req.hostId });
      return { token: m.jwt, expiresAtMs: m.expiresAtMs };
    },
    async mintIdentityToken() {
      throw new Error("not used");
    },
  };
  return { upstream, mints: () => mints };
}

function vm(vmId: string, upstream: TokenUpstream, now?: () => number): VmAuthorizationProcess {
  const p = new VmAuthorizationProcess({
    identity: { vmId, hostId: "bench-host", hostname: vmId, instanceName: vmId, zone: "local-a", projectId: "bench", numericProjectId: "1" },
    upstream,
    now,
    // The benchmark measures serving, not the guest rate limit.
    server: { rateLimit: { ratePerSecond: 1e9, burst: 1e9 } },
  });
  const t = (now ?? Date.now)();
  p.addAccount({ serviceAccount: SA, scopes: ["storage.read"], accessor: "tpla_bench", version: 1, token: "tplt_bench", issuedAtMs: t, expiresAtMs: t + 24 * 3600_000 });
  return p;
}

async function metadataCacheHit(): Promise<BenchResult[]> {
  const { upstream } = await authority();
  const p = vm("vm-bench", upstream);
  const at = await p.start("127.0.0.1", 0);
  const url = `http://127.0.0.1:${at.port}${TOKEN_PATH}`;
  const first = await fetch(url, { headers: { "Metadata-Flavor": "Google" } });
  const body = await first.text();
  if (first.status !== 200) throw new Error(`metadata endpoint answered ${first.status}: ${body}`);
  // The baseline: the least a node:http server can do to answer with the same bytes.
  const bare = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((r) => bare.listen(0, "127.0.0.1", () => r()));
  const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}${TOKEN_PATH}`;
  const load = child("./http-load.ts");
  type Out = { rps: number; p50: number; p99: number; errors: number };
  const measure = async (u: string, offeredRps?: number): Promise<Out> => {
    load.proc.stdin!.write(JSON.stringify({ url: u, headers: { "Metadata-Flavor": "Google" }, concurrency: 64, ms: 1500, offeredRps }) + "\n");
    return JSON.parse(await load.next()) as Out;
  };
  try {
    const ours: Out[] = [];
    const theirs: Out[] = [];
    for (let i = 0; i < 4; i++) {
      theirs.push(await measure(bareUrl));
      ours.push(await measure(url));
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    const errors = ours.reduce((n, o) => n + o.errors, 0);
    if (errors > 0) throw new Error(`${errors} metadata requests failed during the benchmark`);
    const p99 = med(ours.map((o) => o.p99));
    // Latency is also measured at a paced load (64 clients offering 4000 req/s together, as
    // guests do), where it shows service time rather than the queue of a saturated loop.
    const pacedOurs: Out[] = [];
    const pacedBare: Out[] = [];
    for (let i = 0; i < 3; i++) {
      pacedBare.push(await measure(bareUrl, 4000));
      pacedOurs.push(await measure(url, 4000));
    }
    const pacedP99 = med(pacedOurs.map((o) => o.p99));
    return [
      result({
        name: "token.metadata-cache-hit-vs-bare-http",
        value: med(ours.map((o) => o.rps)),
        unit: "req/s",
        baseline: med(theirs.map((o) => o.rps)),
        target: 0.8,
        note: `64 keep-alive clients in a separate process; p50 ${med(ours.map((o) => o.p50)).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms (bare p99 ${med(theirs.map((o) => o.p99)).toFixed(2)} ms)`,
      }),
      result({
        name: "token.metadata-cache-hit-p99-64-clients-saturated",
        value: p99,
        unit: "ms",
        baseline: 2,
        target: 1,
        lowerIsBetter: true,
        note: `target: p99 under 2 ms; closed loop at full speed (Little's law: 64 in flight / throughput), bare node:http p99 ${med(theirs.map((o) => o.p99)).toFixed(2)} ms`,
      }),
      result({
        name: "token.metadata-cache-hit-p99-64-clients-4k-rps",
        value: pacedP99,
        unit: "ms",
        baseline: 2,
        target: 1,
        lowerIsBetter: true,
        note: `target: p99 under 2 ms; 64 clients offering 4000 req/s together (achieved ${med(pacedOurs.map((o) => o.rps)).toFixed(0)} req/s), bare node:http p99 ${med(pacedBare.map((o) => o.p99)).toFixed(2)} ms`,
      }),
    ];
  } finally {
    load.proc.stdin!.end();
    load.proc.kill();
    await p.stop();
    await new Promise<void>((r) => bare.close(() => r()));
  }
}

async function mintVsEcho(): Promise<BenchResult[]> {
  const hostKey = generateSigningKey("Ed25519");
  const sealing = generateX25519KeyPair();
  const server = child("./mint-bench-server.ts", [JSON.stringify(hostKey.publicJwk), JSON.stringify(exportX25519PublicJwk(sealing.publicKey))]);
  const [, port, , longTermToken] = (await server.next()).split(" ");
  const address = `127.0.0.1:${port}`;
  const hostTokens = createClient(TokenServiceService, address, { key: hostKey });
  // As the agent does: one Ed25519-signed OpenHostSession, then mints signed with HMAC-SHA256.
  const session = new HostMintSession({
    hostId: "bench-host",
    hostClient: hostTokens,
    connect: (key) => createClient(TokenServiceService, address, { key }),
    unseal: (sealed) => openSealedToken(sealing.privateKey, "bench-host", sealed, "host session"),
  });
  const signedEcho = createClient(AuthServiceService, address, { key: hostKey });
  const Unsigned = grpc.makeGenericClientConstructor({ echo: { ...AuthServiceService.echo, path: "/bench.UnsignedEcho/Echo", originalName: "Echo" } }, "UnsignedEcho");
  const unsigned = new Unsigned(address, grpc.credentials.createInsecure()) as unknown as {
    echo(req: EchoRequest, cb: (e: grpc.ServiceError | null, r?: EchoResponse) => void): void;
    close(): void;
  };
  const echo = () => new Promise<EchoResponse>((resolve, reject) => unsigned.echo({ message: "mint" }, (e, r) => (e ? reject(e) : resolve(r!))));
  const request = { longTermToken: longTermToken!, hostId: "bench-host", vmId: "bench-vm", scopes: [], audience: "" };
  // As the agent mints: the VMs' concurrent mints share calls while one is in flight.
  const batcher = new MintBatcher((batch) => session.call((c) => c.mintAccessTokens(batch)));
  const mint = () => batcher.mint(request);
  const mintUnbatched = () => session.call((c) => c.mintAccessToken(request));
  const mintHostKey = () => hostTokens.mintAccessToken(request);
  try {
    await mint();
    if (!session.keyId()) throw new Error("the benchmark could not open a mint session");
    await mintHostKey();
    await echo();
    const vsUnsigned = await interleaved(3, () => asyncOpsPerSecond(echo, 1500, 16), () => asyncOpsPerSecond(mint, 1500, 16));
    const unbatchedVsUnsigned = await interleaved(2, () => asyncOpsPerSecond(echo, 1500, 16), () => asyncOpsPerSecond(mintUnbatched, 1500, 16));
    const hostKeyVsUnsigned = await interleaved(2, () => asyncOpsPerSecond(echo, 1500, 16), () => asyncOpsPerSecond(mintHostKey, 1500, 16));
    const vsSigned = await interleaved(3, () => asyncOpsPerSecond(() => signedEcho.echo({ message: "mint" }), 1500, 16), () => asyncOpsPerSecond(mintHostKey, 1500, 16));
    if (session.stats.hostKeyCalls > 0) throw new Error(`${session.stats.hostKeyCalls} session mints fell back to the host key`);
    // Server CPU per call: what a call costs the authority, whatever else the machine runs.
    const cpu = async () => {
      server.proc.stdin!.write("cpu\n");
      return Number((await server.next()).split(" ")[1]);
    };
    const cpuPerCall = async (fn: () => Promise<unknown>, calls = 3000) => {
      const before = await cpu();
      let left = calls;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (left-- > 0) await fn();
      }));
      return ((await cpu()) - before) / calls;
    };
    const echoCpu: number[] = [];
    const mintCpu: number[] = [];
    for (let i = 0; i < 3; i++) {
      echoCpu.push(await cpuPerCall(echo));
      mintCpu.push(await cpuPerCall(mint));
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    return [
      result({
        name: "token.mint-grpc-vs-unsigned-echo",
        ...vsUnsigned,
        unit: "mints/s",
        target: 0.7,
        note: `as the agent mints: 16 concurrent mint requests batched while a call is in flight (largest batch ${batcher.stats.largestBatch}, ${(batcher.stats.mints / Math.max(1, batcher.stats.calls)).toFixed(1)} per call), calls signed with the host session key (HMAC-SHA256), cached token record, one EdDSA JWT per token; echo: 16 unary calls in flight; server in a child process`,
      }),
      result({
        name: "token.mint-server-cpu-vs-unsigned-echo",
        value: med(mintCpu),
        unit: "µs CPU/token",
        baseline: med(echoCpu),
        target: 0.7,
        lowerIsBetter: true,
        note: "the authority process's CPU (user+system) per token, batched as above, vs per unsigned echo call; 3000 each, 16 in flight; unaffected by other load",
      }),
      result({
        name: "token.mint-grpc-unbatched-vs-unsigned-echo",
        ...unbatchedVsUnsigned,
        unit: "mints/s",
        target: 0.25,
        note: "one token per call (session key): the per-call floor, informational",
      }),
      result({
        name: "token.mint-grpc-host-key-vs-unsigned-echo",
        ...hostKeyVsUnsigned,
        unit: "mints/s",
        target: 0.25,
        note: "without a session: every mint call verified with Ed25519 (what the session saves); informational",
      }),
      result({
        name: "token.mint-grpc-vs-signed-echo",
        ...vsSigned,
        unit: "mints/s",
        target: 0.7,
        note: "Ed25519-signed mint against an Ed25519-signed Echo: the token work alone (lookup + JWT), call signing priced out",
      }),
    ];
  } finally {
    session.close();
    hostTokens.close();
    signedEcho.close();
    unsigned.close();
    server.proc.stdin!.end();
  }
}

async function herd(): Promise<BenchResult[]> {
  let clock = Date.now();
  const now = () => clock;
  const { upstream, mints } = await authority(now);
  const vms = Array.from({ length: 200 }, (_, i) => vm(`vm-${i}`, upstream, now));
  const ports: number[] = [];
  for (const p of vms) ports.push((await p.start("127.0.0.1", 0)).port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const get = (port: number) =>
    new Promise<number>((resolve, reject) => {
      http
        .get({ agent, host: "127.0.0.1", port, path: TOKEN_PATH, headers: { "Metadata-Flavor": "Google" } }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        })
        .on("error", reject);
    });
  // Every guest process in every VM asks at once (4 per VM), then again after the refresh point.
  const wave = async () => {
    const statuses = await Promise.all(ports.flatMap((port) => Array.from({ length: 4 }, () => get(port))));
    if (statuses.some((s) => s !== 200)) throw new Error("a herd request failed");
  };
  try {
    const periods = 3;
    let worst = 0;
    for (let period = 0; period < periods; period++) {
      const before = mints();
      await wave();
      await wave();
      worst = Math.max(worst, (mints() - before) / vms.length);
      clock += 55 * 60_000; // past the refresh point of the hour-long token
    }
    return [
      result({
        name: "token.herd-200-vms-mints-per-period",
        value: worst,
        unit: "mints/VM",
        baseline: 1,
        target: 1,
        lowerIsBetter: true,
        note: `200 VM endpoints × 4 concurrent guest requests × 2 waves per period, ${periods} periods: at most one upstream mint per (VM, account, scopes) per period`,
      }),
    ];
  } finally {
    agent.destroy();
    for (const p of vms) await p.stop();
  }
}

export const TOKEN_BENCHMARKS: Benchmark[] = [
  { name: "token.metadata-endpoint", description: "metadata token endpoint cache hit vs bare node:http, load from another process, p99 at 64 clients", run: metadataCacheHit },
  { name: "token.mint", description: "MintAccessToken over gRPC (cache miss at the authority) vs unsigned and signed Echo on the same server", run: mintVsEcho },
  { name: "token.herd", description: "200 VMs refreshing together: upstream mints per (VM, account, scopes) per refresh period", run: herd },
];
