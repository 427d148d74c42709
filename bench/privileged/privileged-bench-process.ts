// Child processes for the privileged round-trip benchmark, so the client's crypto, the agent's
// and the server's each run on their own event loop: `server DATA_DIR` runs a trustplane
// server; `agent DATA_DIR SERVER JOIN_TOKEN` runs an agent and, in the same process, the
// unsigned echo baseline (bench/auth/echo-bench-server.ts's pattern), so both are served alike.
// Each answers "cpu" on stdin with its CPU time, so the benchmark can price a call per process.
import * as grpc from "@grpc/grpc-js";
import type { EchoRequest, EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { startAgent } from "../../server/src/processes/agent-process.js";
import { startServer } from "../../server/src/processes/server-process.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { UNSIGNED_ECHO_SERVICE } from "../auth/echo-bench-server.js";

export const BENCH_HOST_ID = "bench-host-1";

async function unsignedEcho(): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(UNSIGNED_ECHO_SERVICE, {
    echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoResponse>, cb: grpc.sendUnaryData<EchoResponse>) => cb(null, { message: call.request.message, principal: "", keyId: "", requestId: "" }),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { port, server };
}

async function main(): Promise<void> {
  const [mode, dataDir, serverAddress, joinToken] = process.argv.slice(2);
  // Logs off as in the signed-echo benchmark's server: the baseline logs nothing either.
  const logger = createLogger({ level: "silent" });
  const flags = { dataDir: dataDir!, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "silent" };
  let stop: () => Promise<void>;
  if (mode === "server") {
    const server = await startServer(loadConfig({ env: {}, flags }), logger, { adminKeyFile: `${dataDir}/admin.jwk.json` });
    process.stdout.write(`READY ${server.address}\n`);
    stop = () => server.shutdown();
  } else {
    const agent = await startAgent(loadConfig({ env: {}, flags: { ...flags, hostId: BENCH_HOST_ID, serverAddress: serverAddress!, joinToken: joinToken! } }), logger);
    const echo = await unsignedEcho();
    process.stdout.write(`READY ${agent.address} 127.0.0.1:${echo.port} ${JSON.stringify(agent.signingKey.publicJwk)}\n`);
    stop = async () => {
      echo.server.forceShutdown();
      await agent.shutdown();
    };
  }
  // "cpu" on stdin: this process's CPU time so far (µs), to price calls per process.
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    if (d.includes("cpu")) {
      const u = process.cpuUsage();
      process.stdout.write(`CPU ${u.user + u.system}\n`);
    }
  });
  process.stdin.on("end", () => void stop().finally(() => process.exit(0)));
}

if (process.argv[1]?.endsWith("privileged-bench-process.ts")) void main();
