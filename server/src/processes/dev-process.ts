// Wiring for `trustplane dev`: a server and one agent in one process on embedded defaults
// (SQLite and blobs under ./.trustplane/, generated dev keys), so every flow runs with
// nothing else installed. The agent joins through the same signed API production uses.
import type { JsonWebKey } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { importSigningKey } from "../../../sdk/src/auth/index.js";
import { createClient } from "../../../sdk/src/client/create-client.js";
import { AuthServiceService } from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import type { Config } from "../runtime/config.js";
import { readJsonSecretFile } from "../runtime/key-file.js";
import type { Logger } from "../runtime/logger.js";
import { startAgent, type AgentHandle } from "./agent-process.js";
import { startServer, type ServerHandle } from "./server-process.js";

export const DEV_HOST_ID = "dev-host-1";

export interface DevHandle {
  server: ServerHandle;
  agent: AgentHandle;
  adminKeyFile: string;
  shutdown(): Promise<void>;
}

export async function startDev(config: Config, logger: Logger): Promise<DevHandle> {
  const adminKeyFile = path.join(config.dataDir, "admin.jwk.json");
  const server = await startServer(config, logger.child({ process: "server" }), { adminKeyFile });
  let agent: AgentHandle;
  try {
    const hostId = config.hostId ?? DEV_HOST_ID;
    let joinToken: string | undefined;
    if (!existsSync(path.join(config.dataDir, "agent", hostId, "identity.json"))) {
      const admin = importSigningKey(readJsonSecretFile<JsonWebKey>(adminKeyFile));
      const client = createClient(AuthServiceService, server.address, { key: admin });
      try {
        joinToken = (await client.createJoinToken({ requestId: `dev-join-${hostId}-${Date.now()}`, hostId, ttlSeconds: 600 })).joinToken;
      } finally {
        client.close();
      }
    }
    agent = await startAgent({ ...config, hostId, serverAddress: server.address, joinToken }, logger.child({ process: "agent" }));
  } catch (e) {
    await server.shutdown();
    throw e;
  }
  return {
    server,
    agent,
    adminKeyFile,
    async shutdown() {
      await agent.shutdown();
      await server.shutdown();
    },
  };
}
