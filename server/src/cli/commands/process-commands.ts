// `trustplane server|agent|dev`: start a process, print where it listens, shut down
// gracefully (drain calls, close storage) on SIGINT or SIGTERM.
import { createLogger } from "../../runtime/logger.js";
import { startAgent } from "../../processes/agent-process.js";
import { startDev } from "../../processes/dev-process.js";
import { startServer } from "../../processes/server-process.js";
import { COMMON_OPTIONS, configFrom, parse, type Command } from "../cli-context.js";

function untilSignal(shutdown: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`\n${signal}: draining calls and shutting down…\n`);
      shutdown().then(resolve, (e: Error) => {
        process.stderr.write(`shutdown failed: ${e.message}\n`);
        process.exitCode = 1;
        resolve();
      });
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

const SERVER_OPTIONS = {
  ...COMMON_OPTIONS,
  listen: { type: "string" },
  "database-url": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-client-ca": { type: "string" },
  "admin-key": { type: "string" },
} as const;

function tlsFlag(values: Record<string, unknown>) {
  if (!values["tls-cert"] && !values["tls-key"]) return undefined;
  return { certFile: values["tls-cert"], keyFile: values["tls-key"], clientCaFile: values["tls-client-ca"] };
}

export const serverCommand: Command = {
  name: "server",
  summary: "Run the trusted control-plane server (SQLite by default, PostgreSQL with --database-url).",
  usage: "trustplane server [--listen host:port] [--database-url postgres://…] [--data-dir DIR] [--tls-cert F --tls-key F [--tls-client-ca F]] [--admin-key F] [--config F]",
  async run(argv) {
    const { values } = parse(this, argv, SERVER_OPTIONS);
    const config = configFrom(values, { listen: values.listen, databaseUrl: values["database-url"], tls: tlsFlag(values) });
    const logger = createLogger({ level: config.logLevel });
    const server = await startServer(config, logger, { adminKeyFile: values["admin-key"] });
    if (server.adminKeyFile) process.stderr.write(`bootstrap admin key written to ${server.adminKeyFile} (mode 0600)\n`);
    process.stderr.write(`trustplane server listening on ${server.address}\n`);
    await untilSignal(() => server.shutdown());
  },
};

export const agentCommand: Command = {
  name: "agent",
  summary: "Run the per-host agent; joins the server once with a join token and keeps its host identity.",
  usage: "trustplane agent --server host:port [--join-token T] [--host-id ID] [--region R] [--listen host:port] [--data-dir DIR] [--server-ca F] [--stop-vms]",
  async run(argv) {
    const { values } = parse(this, argv, {
      ...COMMON_OPTIONS,
      server: { type: "string" },
      "join-token": { type: "string" },
      "host-id": { type: "string" },
      region: { type: "string" },
      listen: { type: "string" },
      "server-ca": { type: "string" },
      "stop-vms": { type: "boolean" },
    });
    const config = configFrom(values, {
      serverAddress: values.server,
      joinToken: values["join-token"] ?? process.env.TRUSTPLANE_JOIN_TOKEN,
      hostId: values["host-id"],
      region: values.region,
      agentListen: values.listen,
      serverCaFile: values["server-ca"],
      stopVmsOnShutdown: values["stop-vms"],
    });
    const logger = createLogger({ level: config.logLevel });
    const agent = await startAgent(config, logger);
    process.stderr.write(`trustplane agent ${agent.identity.hostId} listening on ${agent.address}\n`);
    await untilSignal(() => agent.shutdown());
  },
};

export const devCommand: Command = {
  name: "dev",
  summary: "Run a server and one agent together on embedded defaults (SQLite + blobs under ./.trustplane/).",
  usage: "trustplane dev [--data-dir DIR] [--listen host:port] [--agent-listen host:port] [--log-level L] [--stop-vms]",
  async run(argv) {
    const { values } = parse(this, argv, { ...COMMON_OPTIONS, listen: { type: "string" }, "agent-listen": { type: "string" }, "stop-vms": { type: "boolean" } });
    const config = configFrom(values, { listen: values.listen, agentListen: values["agent-listen"], stopVmsOnShutdown: values["stop-vms"] });
    const logger = createLogger({ level: config.logLevel });
    const dev = await startDev(config, logger);
    process.stderr.write(
      [
        "",
        "trustplane dev is running",
        `  server     ${dev.server.address}   (AuthService + every area's API)`,
        `  agent      ${dev.agent.address}   (host ${dev.agent.identity.hostId})`,
        `  data       ${config.dataDir}`,
        `  admin key  ${dev.adminKeyFile}   (mode 0600)`,
        "",
        "  try:  npx trustplane whoami",
        "        npx trustplane echo hello",
        "        npx trustplane audit verify",
        "",
      ].join("\n") + "\n",
    );
    await untilSignal(() => dev.shutdown());
  },
};
