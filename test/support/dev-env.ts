// Test support: a real `trustplane dev` (server + agent, SQLite) in a temporary directory on
// loopback ports, with captured pino output so tests can check what reached the logs.
import type { JsonWebKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { importSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { loadConfig, type Config } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startDev, type DevHandle } from "../../server/src/processes/dev-process.js";

export interface DevEnv {
  dev: DevHandle;
  config: Config;
  admin: SigningKey;
  /** Everything logged so far, as raw JSON lines. */
  logs(): string;
  stop(): Promise<void>;
}

export async function startDevEnv(overrides: Partial<Config> = {}): Promise<DevEnv> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-dev-"));
  const config = { ...loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "debug" } }), ...overrides };
  const sink = new PassThrough();
  let captured = "";
  sink.on("data", (d: Buffer) => (captured += d.toString()));
  const dev = await startDev(config, createLogger({ level: "debug", destination: sink }));
  const admin = importSigningKey(JSON.parse(readFileSync(dev.adminKeyFile, "utf8")) as JsonWebKey);
  return {
    dev,
    config,
    admin,
    logs: () => captured,
    async stop() {
      await dev.shutdown();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
