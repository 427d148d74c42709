// `trustplane deploy push|list|get|undeploy`: uploads an archive with a progress bar, then
// follows its stages live (quarantined → validating → post-processing → stored or malicious).
import { createHash } from "node:crypto";
import { createReadStream, statSync } from "node:fs";
import path from "node:path";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { DeployServiceService, Deployment, DeploymentStatus } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import { CLIENT_OPTIONS, client, parse, print, requirePositional, type Command } from "../../cli/cli-context.js";
import { ProgressBar } from "../../cli/progress-bar.js";
import { renderTable } from "../../cli/table.js";

const st = (s: DeploymentStatus) => DeploymentStatus[s]?.replace("DEPLOYMENT_STATUS_", "") ?? "?";
const CHUNK = 256 * 1024;

function describe(d: Deployment): string {
  const lines = [
    `${d.operationId}  ${d.aac?.account}/${d.aac?.application}/${d.aac?.component}  ${st(d.status)}${d.reason ? ` (${d.reason}: ${d.detail})` : ""}`,
    `  ${d.fileName}, ${d.size} bytes${d.entryCount ? `, ${d.entryCount} entries, ${d.uncompressedSize} bytes uncompressed` : ""}${d.artifactDigest ? `, artifact ${d.artifactDigest.slice(0, 16)}…` : ""}`,
  ];
  if (d.roles.length) lines.push(`  roles: ${d.roles.map((r) => r.name).join(", ")}`);
  if (d.docs.length) lines.push(`  docs: ${d.docs.map((x) => `${x.file} “${x.title}” (${x.headings.length} headings)`).join("; ")}`);
  if (d.metadata.size) lines.push(`  metadata: ${[...d.metadata].map(([k, v]) => `${k}=${v}`).join(", ")}`);
  return lines.join("\n");
}

async function sha256File(file: string): Promise<Buffer> {
  const h = createHash("sha256");
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest();
}

export const deployCommand: Command = {
  name: "deploy",
  summary: "Deploy archives for validation by sandboxed workers: push (progress + live stages), list, get, undeploy.",
  usage: "trustplane deploy push FILE --account A --application B --component C | list [--account A] | get OPERATION | undeploy OPERATION",
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...CLIENT_OPTIONS, account: { type: "string" }, application: { type: "string" }, component: { type: "string" } });
    const deploy = client(DeployServiceService, values);
    try {
      switch (positionals[0]) {
        case "push": {
          const file = requirePositional(this, positionals, 1, "archive FILE");
          if (!values.account || !values.application || !values.component) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `--account, --application and --component are required\nusage: ${this.usage}`);
          let size: number;
          try {
            size = statSync(file).size;
          } catch (e) {
            throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `cannot read ${file}: ${(e as Error).message}`, "file");
          }
          const sha256 = await sha256File(file);
          const bar = new ProgressBar(`upload ${path.basename(file)}`, size);
          const header = { requestId: `cli-deploy-${sha256.toString("hex").slice(0, 16)}-${Date.now()}`, aac: { account: values.account, application: values.application, component: values.component }, fileName: path.basename(file), declaredSize: size, sha256 };
          const { deployment } = await deploy.deploy(async function* () {
            yield { header };
            let sent = 0;
            for await (const c of createReadStream(file, { highWaterMark: CHUNK })) {
              sent += (c as Buffer).length;
              bar.update(sent);
              yield { chunk: c as Buffer };
            }
            bar.done(sent);
          });
          process.stderr.write(`quarantined as ${deployment!.operationId}; following its stages…\n`);
          let final: Deployment | undefined;
          for await (const u of deploy.watchDeployment({ operationId: deployment!.operationId })) {
            const s = u.stage!;
            process.stderr.write(`  ${new Date(s.timeMs).toISOString().slice(11, 23)}  ${st(s.status).padEnd(16)} ${s.detail}${s.progress ? ` (${Math.round(s.progress * 100)}%)` : ""}\n`);
            if (u.deployment) final = u.deployment;
          }
          final ??= (await deploy.getDeployment({ operationId: deployment!.operationId })).deployment;
          print(values, Deployment.toJSON(final!), () => describe(final!));
          if (final!.status !== DeploymentStatus.DEPLOYMENT_STATUS_STORED) process.exitCode = 4;
          break;
        }
        case "list": {
          const { deployments } = await deploy.listDeployments({ pageSize: 1000, aac: values.account ? { account: values.account, application: values.application ?? "", component: values.component ?? "" } : undefined });
          print(values, deployments.map((d) => Deployment.toJSON(d)), () =>
            renderTable(
              ["OPERATION", "ACCOUNT/APP/COMPONENT", "STATUS", "FILE", "REASON", "CREATED"],
              deployments.map((d) => [d.operationId, `${d.aac?.account}/${d.aac?.application}/${d.aac?.component}`, st(d.status), d.fileName, d.reason || "-", new Date(d.createdAtMs).toISOString()]),
            ),
          );
          break;
        }
        case "get": {
          const { deployment } = await deploy.getDeployment({ operationId: requirePositional(this, positionals, 1, "OPERATION id") });
          print(values, Deployment.toJSON(deployment!), () => describe(deployment!));
          break;
        }
        case "undeploy": {
          const id = requirePositional(this, positionals, 1, "OPERATION id");
          const { deployment } = await deploy.undeploy({ requestId: `cli-undeploy-${id}`, operationId: id });
          print(values, Deployment.toJSON(deployment!), () => describe(deployment!));
          break;
        }
        default:
          throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(positionals[0] ?? "")}\nusage: ${this.usage}`);
      }
    } finally {
      deploy.close();
    }
  },
};
