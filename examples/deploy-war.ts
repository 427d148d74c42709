// Example flow: a WAR through the deploy trust boundary. The trusted server quarantines the
// upload and hands it to an untrusted, bubblewrap-sandboxed worker; only what passed is
// stored, with the roles, docs and metadata the sub-processors found. A zip slip and a
// Fifield-style overlap bomb pushed right after are recorded as malicious and never stored,
// and the next good deployment still succeeds.
import { createClient } from "../sdk/src/client/create-client.js";
import { DeployServiceService } from "../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import { renderTable } from "../server/src/cli/table.js";
import { maliciousCases } from "../scripts/make-zip-corpus.js";
import { ordersServiceWar } from "./archives/sample-archives.js";
import { pushAndFollow, statusOf } from "./deploy-support.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

export const deployWarFlow: ExampleFlow = {
  name: "deploy-war",
  title: "Deploy: a WAR validated by a sandboxed worker, stored with its roles, docs and metadata; bombs and zip slips recorded as malicious",
  async run(ctx: TourContext) {
    const deploy = createClient(DeployServiceService, ctx.server, { key: ctx.admin });
    try {
      const war = ordersServiceWar();
      const to = { account: "acme", application: "orders", component: "web", fileName: "orders-service.war" };
      const stages: string[] = [];
      const d = await pushAndFollow(deploy, war, to, (s) => stages.push(s.split(":")[0]!));
      if (statusOf(d) !== "STORED") throw new Error(`the WAR was not stored: ${statusOf(d)} ${d.reason} ${d.detail}`);
      ctx.say(`${to.fileName} (${war.length} bytes): ${[...new Set(stages)].join(" → ")} in ${d.validationMs} ms; ${d.entryCount} entries incl. 2 nested JARs, artifact ${d.artifactDigest.slice(0, 16)}…`);
      for (const line of renderTable(["role", "description"], d.roles.map((r) => [r.name, r.description || "—"])).split("\n")) ctx.say(`  ${line}`);
      ctx.say(`constraints: ${d.constraints.map((c) => `${c.name} ${c.urlPatterns.join(",")} → ${c.roles.join("|")}`).join("; ")}`);
      ctx.say(`docs: ${d.docs.map((x) => `${x.file} “${x.title}” (${x.headings.length} headings)`).join("; ")}`);
      ctx.say(`metadata: Bundle-SymbolicName=${d.metadata.get("Bundle-SymbolicName")}, Import-Package=${d.metadata.get("Import-Package")}, maven orders-model ${d.metadata.get("maven.orders-model.version")}`);

      const cases = maliciousCases();
      for (const file of ["zip-slip-unix.zip", "quoted-overlap-bomb.zip", "nested-42.zip"]) {
        const c = cases.find((x) => x.file === file)!;
        const bad = await pushAndFollow(deploy, c.bytes, { ...to, fileName: file.replace(".zip", ".war") });
        if (statusOf(bad) !== "MALICIOUS" || bad.artifactDigest) throw new Error(`${file} was not refused: ${statusOf(bad)}`);
        ctx.say(`${file} (${c.bytes.length} bytes) → MALICIOUS ${bad.reason}: ${bad.detail.split("; the archive was rejected")[0]}; nothing stored, bytes kept in quarantine`);
      }
      const again = await pushAndFollow(deploy, war, { ...to, fileName: "orders-service-2.war" });
      if (statusOf(again) !== "STORED") throw new Error(`the WAR after the bombs was not stored: ${statusOf(again)}`);
      const first = (await deploy.getDeployment({ operationId: d.operationId })).deployment!;
      ctx.say(`the same WAR right after the malicious ones: STORED on a fresh worker; the first one is now ${statusOf(first)}`);
    } finally {
      deploy.close();
    }
  },
};

if (process.argv[1]?.endsWith("deploy-war.ts")) {
  await deployWarFlow.run(standaloneContext());
}
