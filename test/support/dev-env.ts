// Test support: a real `trustplane dev` (server + agent, SQLite) in a temporary directory on
// loopback ports, with captured pino output so tests can check what reached the logs.
import type { JsonWebKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { importSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { loadConfig, type Config } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startDev, type DevHandle } from "../../server/src/processes/dev-process.js";
import type { DriverInstance } from "../../server/src/vm/agent/driver.js";
import { availableDrivers } from "../../server/src/vm/agent/vm-agent-area.js";

/**
 * VMs outlive their agent, so a test that stops its env with VMs still running (or failed
 * before terminating them) would leave guests, metadata relays, network namespaces and cgroups
 * behind once the data directory is gone: every instance a host persisted is ended here by its
 * driver, which removes all of that.
 */
async function endLeftoverInstances(dataDir: string): Promise<void> {
  const agents = path.join(dataDir, "agent");
  if (!existsSync(agents)) return;
  const drivers = availableDrivers({ TRUSTPLANE_VM_DRIVERS: "sandbox,qemu" });
  for (const host of readdirSync(agents)) {
    const vms = path.join(agents, host, "vms");
    if (!existsSync(vms)) continue;
    for (const vmId of readdirSync(vms)) {
      let record: { spec?: { hypervisor?: number }; handle?: DriverInstance };
      try {
        record = JSON.parse(readFileSync(path.join(vms, vmId, "instance.json"), "utf8")) as typeof record;
      } catch {
        continue;
      }
      const driver = drivers.find((d) => d.hypervisor === record.spec?.hypervisor);
      if (record.handle && driver) await driver.stop(record.handle, 0, true).catch(() => undefined);
    }
  }
}

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
      await endLeftoverInstances(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
