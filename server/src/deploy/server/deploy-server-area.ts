// The deploy area on the server: the trusted deploy manager over a warm pool of untrusted,
// bubblewrap-sandboxed workers; on start it resumes deployments a restart interrupted, and
// a retention rule purges quarantined archives of failed deployments.
import path from "node:path";
import { DeployServiceService } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { ServerArea } from "../../processes/area.js";
import { WorkerPool } from "../sandbox/worker-pool.js";
import { DeployManager } from "./deploy-manager.js";
import { createDeployHandlers } from "./deploy-service.js";
import { DeploymentRepository } from "./deployment-repository.js";

export const deployServerArea: ServerArea = {
  name: "deploy",
  async start(ctx) {
    const pool = new WorkerPool({ scratchRoot: path.join(ctx.config.dataDir, "deploy", "scratch") });
    const repo = new DeploymentRepository(ctx.storage.db);
    const manager = new DeployManager({
      storage: ctx.storage,
      repo,
      blobs: ctx.blobs,
      validator: pool,
      quarantineDir: path.join(ctx.config.dataDir, "deploy", "quarantine"),
      logger: ctx.logger,
    });
    ctx.bind(DeployServiceService, createDeployHandlers(manager, repo));
    await manager.recover();
    const purge = setInterval(() => void manager.purgeQuarantine().catch((e: Error) => ctx.logger.warn({ err: e.message }, "quarantine purge failed")), 3600_000);
    purge.unref();
    return {
      async stop() {
        clearInterval(purge);
        manager.beginStop();
        await pool.close();
        await manager.drained();
      },
    };
  },
};
