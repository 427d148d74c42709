// Graceful shutdown: a call in flight when shutdown starts still completes; new calls are
// refused; a call outlasting the drain window is cancelled; storage closes with the server.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { GrpcServerHost } from "../../server/src/runtime/grpc-server.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startDevEnv } from "../support/dev-env.js";

const SLOW = {
  wait: {
    path: "/test.Slow/Wait",
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: Buffer) => v,
    requestDeserialize: (v: Buffer) => v,
    responseSerialize: (v: Buffer) => v,
    responseDeserialize: (v: Buffer) => v,
  },
} satisfies grpc.ServiceDefinition;

async function slowServer(drainSeconds: number) {
  const host = new GrpcServerHost({ listen: "127.0.0.1:0", logger: createLogger({ level: "silent" }), drainSeconds });
  host.server.addService(SLOW, {
    wait: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const ms = Number(call.request.toString());
      setTimeout(() => cb(null, Buffer.from("done")), ms);
    },
  });
  const address = await host.start();
  const Client = grpc.makeGenericClientConstructor(SLOW, "Slow");
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as {
    wait(req: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): void;
    close(): void;
  };
  const wait = (ms: number) => new Promise<string>((resolve, reject) => client.wait(Buffer.from(String(ms)), (e, r) => (e ? reject(e) : resolve(r!.toString()))));
  return { host, client, wait };
}

describe("graceful shutdown", () => {
  it("lets a call in flight finish before the server stops", async () => {
    const { host, client, wait } = await slowServer(5);
    const inFlight = wait(400);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await host.shutdown();
    expect(await inFlight).toBe("done");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    await expect(wait(1)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    client.close();
  });

  it("cancels a call that outlasts the drain window", async () => {
    const { host, client, wait } = await slowServer(0.3);
    const inFlight = wait(5000);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await host.shutdown();
    expect(Date.now() - t0).toBeLessThan(2000);
    await expect(inFlight).rejects.toBeDefined();
    client.close();
  });

  it("closes storage when the dev server shuts down", async () => {
    const env = await startDevEnv();
    const storage = env.dev.server.storage;
    await env.stop();
    await expect(storage.principals.get("admin")).rejects.toThrow();
  });
});
