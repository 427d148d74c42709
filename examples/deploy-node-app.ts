// Example flow: a Node app through the deploy trust boundary. Its package.json install
// scripts are recorded by name and never run; the security sub-processor asks the server's
// resource provider for the roles currently stored for its AAC and reports the ones a new
// version drops; the deployment is then undeployed, which removes its domain records.
import { createClient } from "../sdk/src/client/create-client.js";
import { DeployServiceService } from "../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import { renderTable } from "../server/src/cli/table.js";
import { makeZip } from "../scripts/make-zip-corpus.js";
import { ordersApiNodeApp } from "./archives/sample-archives.js";
import { pushAndFollow, statusOf } from "./deploy-support.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

export const deployNodeAppFlow: ExampleFlow = {
  name: "deploy-node-app",
  title: "Deploy: a Node app (scripts recorded, never run), roles compared with the stored version, undeploy",
  async run(ctx: TourContext) {
    const deploy = createClient(DeployServiceService, ctx.server, { key: ctx.admin });
    try {
      const to = { account: "acme", application: "orders", component: "api", fileName: "orders-api.zip" };
      const app = await pushAndFollow(deploy, ordersApiNodeApp(), to);
      if (statusOf(app) !== "STORED") throw new Error(`the app was not stored: ${statusOf(app)} ${app.reason} ${app.detail}`);
      ctx.say(`${to.fileName}: STORED as ${app.metadata.get("package.name")}@${app.metadata.get("package.version")}, roles ${app.roles.map((r) => r.name).join(", ")}`);
      ctx.say(`install scripts recorded, never run: ${app.metadata.get("package.scripts")}; dependencies ${app.metadata.get("package.dependencies")}`);

      // Version 2.2 drops orders.admin: the worker learns the stored roles from the resource provider.
      const v2 = makeZip([
        { name: "package.json", data: JSON.stringify({ name: "orders-api", version: "2.2.0", main: "src/server.js" }) },
        { name: "trustplane-roles.json", data: JSON.stringify({ roles: [{ name: "orders.read" }, { name: "orders.write" }] }) },
        { name: "src/server.js", data: "export {};\n" },
      ]);
      const next = await pushAndFollow(deploy, v2, { ...to, fileName: "orders-api-2.2.zip" });
      if (statusOf(next) !== "STORED") throw new Error(`2.2 was not stored: ${statusOf(next)}`);
      ctx.say(`2.2 stored; roles this version drops (from the resource provider's view of acme/orders/api): ${next.metadata.get("security.removed-roles")}`);

      const { deployment: gone } = await deploy.undeploy({ requestId: `demo-undeploy-${next.operationId}`, operationId: next.operationId });
      ctx.say(`undeployed ${next.operationId}: ${statusOf(gone!)}`);
      const { deployments } = await deploy.listDeployments({ aac: { account: "acme", application: "orders", component: "" }, pageSize: 20, pageToken: "", status: 0 });
      for (const line of renderTable(["operation", "component", "file", "status", "reason"], deployments.map((d) => [d.operationId, d.aac!.component, d.fileName, statusOf(d), d.reason || "—"])).split("\n")) ctx.say(`  ${line}`);
    } finally {
      deploy.close();
    }
  },
};

if (process.argv[1]?.endsWith("deploy-node-app.ts")) {
  await deployNodeAppFlow.run(standaloneContext());
}
