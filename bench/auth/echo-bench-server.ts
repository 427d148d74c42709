// Child process for the signed-call benchmark: one gRPC server on loopback with the signed
// AuthService.Echo (full verification through the binder) and the same Echo registered
// unsigned under another path, so both are measured against the same process and core.
import type { JsonWebKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { AuthServiceService, EchoRequest, EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { bindService } from "../../server/src/runtime/auth/service-binder.js";
import { createLogger } from "../../server/src/runtime/logger.js";

export const UNSIGNED_ECHO_PATH = "/bench.UnsignedEcho/Echo";

export const UNSIGNED_ECHO_SERVICE = {
  echo: { ...AuthServiceService.echo, path: UNSIGNED_ECHO_PATH, originalName: "Echo" },
} satisfies grpc.ServiceDefinition;

async function main(): Promise<void> {
  const jwks = JSON.parse(process.argv[2] ?? "[]") as JsonWebKey[];
  const keys = new Map(jwks.map((j) => importVerificationKey(j)).map((k) => [k.keyId, k]));
  const server = new grpc.Server();
  const logger = createLogger({ level: "silent" });
  const verifier = new CallVerifier({
    keys: { resolve: async (keyId) => (keys.has(keyId) ? { principal: "bench", key: keys.get(keyId)!, revoked: false, roles: [] } : undefined) },
    caKeys: () => [],
    nonces: new MemoryNonceStore(),
    policy: { authorize: async () => true },
  });
  bindService(server, AuthServiceService, { echo: async (req, ctx) => ({ message: req.message, principal: ctx.caller.principal, keyId: ctx.caller.keyId, requestId: ctx.requestId }) }, { verifier, logger });
  server.addService(UNSIGNED_ECHO_SERVICE, {
    echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoResponse>, cb: grpc.sendUnaryData<EchoResponse>) =>
      cb(null, { message: call.request.message, principal: "", keyId: "", requestId: String(Math.random()).slice(2) }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  process.stdout.write(`PORT ${port}\n`);
  // "cpu" on stdin: report this process's CPU time so far (µs), to price calls per process.
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    if (d.includes("cpu")) {
      const u = process.cpuUsage();
      process.stdout.write(`CPU ${u.user + u.system}\n`);
    }
  });
  process.stdin.on("end", () => server.forceShutdown());
}

if (process.argv[1]?.endsWith("echo-bench-server.ts")) void main();
