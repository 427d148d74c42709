// grpc.health.v1 for every Trustplane process. Health is deliberately unsigned (probes carry
// no keys) and reveals only serving status. "" is the whole process; each bound service by name.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fileURLToPath } from "node:url";

export type ServingStatus = "SERVING" | "NOT_SERVING";

const HEALTH_PROTO = fileURLToPath(new URL("./health.proto", import.meta.url));

export function loadHealthDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(HEALTH_PROTO, { keepCase: true, enums: String, defaults: true });
}

export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; call: grpc.ServerWritableStream<{ service: string }, unknown> }>();

  set(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.call.write({ status });
  }

  /** Marks everything NOT_SERVING (used when draining) and ends watches. */
  shutdown(): void {
    for (const service of this.statuses.keys()) this.set(service, "NOT_SERVING");
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  addToServer(server: grpc.Server, definition = loadHealthDefinition()): void {
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      grpc: { health: { v1: { Health: { service: grpc.ServiceDefinition } } } };
    };
    server.addService(pkg.grpc.health.v1.Health.service, {
      Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const status = this.statuses.get(call.request.service);
        if (!status) callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        else callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        const service = call.request.service;
        call.write({ status: this.statuses.get(service) ?? "SERVICE_UNKNOWN" });
        const watcher = { service, call };
        this.watchers.add(watcher);
        call.on("cancelled", () => this.watchers.delete(watcher));
      },
    });
  }
}
