// The gRPC server every Trustplane process runs: TLS or mTLS when configured, the standard
// health and reflection services, and a graceful shutdown that drains calls in flight
// before cancelling what is left. Areas add their services through the service binder.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import type { TlsConfig } from "./config.js";
import { HealthService } from "./health/health-service.js";
import type { Logger } from "./logger.js";

const PROTO_ROOT = fileURLToPath(new URL("../../../proto/", import.meta.url));
const HEALTH_PROTO = fileURLToPath(new URL("./health/health.proto", import.meta.url));

function protoFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return protoFiles(full);
    return name.endsWith(".proto") ? [path.relative(PROTO_ROOT, full)] : [];
  });
}

export function serverCredentials(tls: TlsConfig | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", `tls.${what}: cannot read ${file}: ${(e as Error).message}`, `tls.${what}`);
    }
  };
  const clientCa = tls.clientCaFile ? read(tls.clientCaFile, "clientCaFile") : null;
  return grpc.ServerCredentials.createSsl(
    clientCa,
    [{ cert_chain: read(tls.certFile, "certFile"), private_key: read(tls.keyFile, "keyFile") }],
    clientCa !== null,
  );
}

export interface GrpcServerOptions {
  listen: string;
  tls?: TlsConfig;
  logger: Logger;
  drainSeconds: number;
}

export class GrpcServerHost {
  readonly server = new grpc.Server({ "grpc.max_receive_message_length": 8 * 1024 * 1024 });
  readonly health = new HealthService();
  private boundPort = 0;

  constructor(private readonly options: GrpcServerOptions) {
    this.health.addToServer(this.server);
    const definitions = protoLoader.loadSync([...protoFiles(PROTO_ROOT), HEALTH_PROTO], {
      includeDirs: [PROTO_ROOT, path.dirname(HEALTH_PROTO)],
      keepCase: true,
    });
    new ReflectionService(definitions).addToServer(this.server);
  }

  get port(): number {
    return this.boundPort;
  }

  /** Binds and starts serving; returns the address actually bound (port 0 picks one). */
  async start(): Promise<string> {
    const creds = serverCredentials(this.options.tls);
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.options.listen, creds, (err, port) => (err ? reject(err) : resolve(port))),
    ).catch((err: Error) => {
      throw new TrustplaneError("UNAVAILABLE", "LISTEN_FAILED", `cannot listen on ${this.options.listen}: ${err.message}`, "listen");
    });
    this.health.set("", "SERVING");
    const host = this.options.listen.slice(0, this.options.listen.lastIndexOf(":"));
    return `${host}:${this.boundPort}`;
  }

  /** Stops accepting calls, waits up to drainSeconds for calls in flight, then cancels the rest. */
  async shutdown(): Promise<void> {
    this.health.shutdown();
    const drained = new Promise<boolean>((resolve) => this.server.tryShutdown(() => resolve(true)));
    const timeout = new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), this.options.drainSeconds * 1000);
      t.unref();
    });
    if (!(await Promise.race([drained, timeout]))) {
      this.options.logger.warn({ drainSeconds: this.options.drainSeconds }, "drain timed out; cancelling calls still in flight");
      this.server.forceShutdown();
    }
  }
}
