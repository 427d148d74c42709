// DeployService on the server: the gRPC face of the deploy manager. Parses only request
// parameters; an account's deployments are visible to that account (or admins).
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { DeployServiceService, Deployment } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { CallContext, Handlers } from "../../runtime/auth/service-binder.js";
import type { DeployManager } from "./deploy-manager.js";
import type { DeploymentRepository } from "./deployment-repository.js";

const isAdmin = (ctx: CallContext) => ctx.caller.roles.includes("admin");

export function createDeployHandlers(manager: DeployManager, repo: DeploymentRepository): Partial<Handlers<typeof DeployServiceService>> {
  async function visible(operationId: string, ctx: CallContext): Promise<Deployment> {
    const d = await repo.get(operationId);
    if (!d || (!isAdmin(ctx) && d.aac?.account !== ctx.caller.principal)) {
      throw new TrustplaneError("NOT_FOUND", "DEPLOYMENT_NOT_FOUND", `no deployment ${JSON.stringify(operationId)} (or not yours)`, "operation_id");
    }
    return d;
  }
  return {
    async deploy(stream, ctx) {
      return { deployment: await manager.receive(stream, ctx.caller.principal, isAdmin(ctx)) };
    },
    async getDeployment(req, ctx) {
      return { deployment: await visible(req.operationId, ctx) };
    },
    async listDeployments(req, ctx) {
      const account = isAdmin(ctx) ? req.aac?.account || undefined : ctx.caller.principal;
      const page = await repo.list({ account, application: req.aac?.application || undefined, component: req.aac?.component || undefined, status: req.status || undefined, pageSize: req.pageSize, pageToken: req.pageToken || undefined });
      return { deployments: page.items, nextPageToken: page.nextPageToken ?? "" };
    },
    async *watchDeployment(req, ctx) {
      await visible(req.operationId, ctx);
      for await (const u of manager.watch(req.operationId, ctx.signal)) yield { stage: u.stage, deployment: u.deployment };
    },
    async undeploy(req, ctx) {
      await visible(req.operationId, ctx);
      return { deployment: await manager.undeploy(req.operationId, ctx.caller.principal, ctx.requestId) };
    },
  };
}
