// Deploy end to end on `trustplane dev`: the trusted server quarantines the upload and hands
// it to an untrusted, sandboxed worker; a realistic WAR is stored with its roles, docs and
// metadata; every malicious archive of the corpus is recorded MALICIOUS with its own reason
// and never reaches the repository; a good archive right after still succeeds.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type SignedClient } from "../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { DeployServiceService, DeploymentStatus, type Deployment } from "../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import { goodNodeApp, goodWar, maliciousCases } from "../../scripts/make-zip-corpus.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

let env: DevEnv;
let deploy: SignedClient<typeof DeployServiceService>;

beforeAll(async () => {
  env = await startDevEnv();
  deploy = createClient(DeployServiceService, env.dev.server.address, { key: env.admin });
}, 60_000);

afterAll(async () => {
  deploy?.close();
  await env?.stop();
});

async function push(bytes: Buffer, fileName: string, component = "web"): Promise<Deployment> {
  const sha256 = createHash("sha256").update(bytes).digest();
  const { deployment } = await deploy.deploy([
    { header: { requestId: `push-${fileName}-${sha256.toString("hex").slice(0, 8)}`, aac: { account: "acme", application: "shop", component }, fileName, declaredSize: bytes.length, sha256 } },
    ...Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) => ({ chunk: bytes.subarray(i * 65536, (i + 1) * 65536) })),
  ]);
  let final: Deployment | undefined;
  for await (const u of deploy.watchDeployment({ operationId: deployment!.operationId })) if (u.deployment) final = u.deployment;
  return final!;
}

describe("deploy", () => {
  it("stores a realistic WAR with its roles, docs and metadata", async () => {
    const d = await push(goodWar(), "orders.war");
    expect(DeploymentStatus[d.status]).toBe("DEPLOYMENT_STATUS_STORED");
    expect(d.artifactDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(d.roles.map((r) => r.name).length).toBeGreaterThan(0);
    expect(d.docs.length).toBeGreaterThan(0);
    expect(d.metadata.get("Bundle-SymbolicName")).toBe("com.example.orders");
    expect(await env.dev.server.storage.db.get("SELECT COUNT(*) AS n FROM deploy_roles WHERE operation_id = ?", [d.operationId])).toMatchObject({ n: d.roles.length });
  }, 60_000);

  it("stores a Node app without running its scripts", async () => {
    const d = await push(goodNodeApp(), "app.zip", "api");
    expect(DeploymentStatus[d.status]).toBe("DEPLOYMENT_STATUS_STORED");
  }, 60_000);

  it("records every malicious archive with its own reason, stores none, and still serves a good one after", async () => {
    const seen: string[] = [];
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    for (const c of maliciousCases()) {
      const d = await push(c.bytes, c.file.replace(/[^A-Za-z0-9._-]/g, "_"));
      expect([c.file, DeploymentStatus[d.status]]).toEqual([c.file, "DEPLOYMENT_STATUS_MALICIOUS"]);
      expect([c.file, d.reason]).toEqual([c.file, c.reason]);
      expect(d.artifactDigest).toBe("");
      seen.push(d.reason);
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    }
    // The bombs inflate (or would) inside the workers; the server process, which hosts the
    // deploy server here, never holds more than the compressed upload.
    expect(rssPeak - rssBefore).toBeLessThan(128 * 1024 * 1024);
    expect(new Set(seen).size).toBeGreaterThan(8);
    const after = await push(goodWar(), "orders-2.war");
    expect(DeploymentStatus[after.status]).toBe("DEPLOYMENT_STATUS_STORED");
  }, 240_000);

  it("asks the resource provider for the AAC's stored roles and reports the ones a new version drops", async () => {
    const first = await push(goodWar(), "catalog.war", "catalog");
    expect(DeploymentStatus[first.status]).toBe("DEPLOYMENT_STATUS_STORED");
    expect(first.metadata.get("security.removed-roles")).toBeUndefined();
    // The Node app declares reader/writer only: every role of the WAR is dropped.
    const second = await push(goodNodeApp(), "catalog.zip", "catalog");
    expect(DeploymentStatus[second.status]).toBe("DEPLOYMENT_STATUS_STORED");
    expect(second.metadata.get("security.removed-roles")?.split(",")).toEqual(first.roles.map((r) => r.name).sort());
  }, 60_000);

  it("refuses an upload whose bytes differ from the declared digest, before any worker sees it", async () => {
    const bytes = goodWar();
    const sha256 = createHash("sha256").update("something else").digest();
    try {
      await deploy.deploy([{ header: { requestId: "lie", aac: { account: "acme", application: "shop", component: "web" }, fileName: "lie.war", declaredSize: bytes.length, sha256 } }, { chunk: bytes }]);
      throw new Error("unexpectedly accepted");
    } catch (e) {
      expect((e as TrustplaneError).reason).toBe("UPLOAD_DIGEST_MISMATCH");
    }
  });

  it("undeploys a stored deployment and removes its domain records", async () => {
    const d = await push(goodWar(), "orders-3.war", "admin-ui");
    const { deployment } = await deploy.undeploy({ requestId: "undeploy-1", operationId: d.operationId });
    expect(DeploymentStatus[deployment!.status]).toBe("DEPLOYMENT_STATUS_UNDEPLOYED");
    expect(await env.dev.server.storage.db.get("SELECT COUNT(*) AS n FROM deploy_roles WHERE operation_id = ?", [d.operationId])).toMatchObject({ n: 0 });
  }, 60_000);
});
