// Shared by the deploy examples: pushes an archive through the signed client stream and
// follows its stages to the final state, as `trustplane deploy push` does.
import { createHash, randomUUID } from "node:crypto";
import type { SignedClient } from "../sdk/src/client/create-client.js";
import { DeployServiceService, DeploymentStatus, type Deployment } from "../sdk/src/gen/trustplane/deploy/v1/deploy.js";

export type DeployClient = SignedClient<typeof DeployServiceService>;
export const statusOf = (d: Deployment) => DeploymentStatus[d.status]?.replace("DEPLOYMENT_STATUS_", "") ?? "?";

export async function pushAndFollow(
  deploy: DeployClient,
  bytes: Buffer,
  to: { account: string; application: string; component: string; fileName: string },
  onStage: (line: string) => void = () => undefined,
): Promise<Deployment> {
  const { fileName, ...aac } = to;
  const sha256 = createHash("sha256").update(bytes).digest();
  const chunk = 256 * 1024;
  const { deployment } = await deploy.deploy([
    { header: { requestId: randomUUID(), aac, fileName, declaredSize: bytes.length, sha256 } },
    ...Array.from({ length: Math.ceil(bytes.length / chunk) }, (_, i) => ({ chunk: bytes.subarray(i * chunk, (i + 1) * chunk) })),
  ]);
  for await (const u of deploy.watchDeployment({ operationId: deployment!.operationId })) {
    if (u.stage) onStage(`${DeploymentStatus[u.stage.status]?.replace("DEPLOYMENT_STATUS_", "")}: ${u.stage.detail}`);
    if (u.deployment) return u.deployment;
  }
  throw new Error(`the watch of ${deployment!.operationId} ended before a final state`);
}
