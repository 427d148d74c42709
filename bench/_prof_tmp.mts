import * as grpc from "@grpc/grpc-js";
import { spawn } from "node:child_process";
import { generateSigningKey } from "../sdk/src/auth/index.js";
import { createClient } from "../sdk/src/client/create-client.js";
import { AuthServiceService, type EchoRequest, type EchoResponse } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { asyncOpsPerSecond } from "./harness.js";
import { UNSIGNED_ECHO_SERVICE } from "./auth/echo-bench-server.js";
const key = generateSigningKey("HS256");
const child = spawn(process.execPath, ["--import", "tsx", "/work/main/bench/auth/echo-bench-server.ts", JSON.stringify([key.publicJwk])], { stdio: ["pipe", "pipe", "inherit"] });
const port = await new Promise<number>((r) => child.stdout.on("data", (d) => { const m = /PORT (\d+)/.exec(String(d)); if (m) r(Number(m[1])); }));
const c = createClient(AuthServiceService, `127.0.0.1:${port}`, { key });
const U = grpc.makeGenericClientConstructor(UNSIGNED_ECHO_SERVICE, "U");
const u = new U(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as any;
const REQUEST = { message: "x".repeat(100) };
const cu = () => new Promise<EchoResponse>((res, rej) => u.echo(REQUEST, (e: any, r: EchoResponse) => (e ? rej(e) : res(r))));
for (const conc of [1, 4, 16, 64]) {
  console.log(conc, "unsigned", Math.round(await asyncOpsPerSecond(cu, 1500, conc)), "signed", Math.round(await asyncOpsPerSecond(() => c.echo(REQUEST), 1500, conc)));
}
c.close(); u.close(); child.stdin.end();
await new Promise((r) => child.on("exit", r));
