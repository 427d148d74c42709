// `trustplane deploy push|list|get|undeploy` as a user runs them against `trustplane dev`: a
// WAR pushed with a progress bar and live stages ends STORED with its roles; a zip slip ends
// MALICIOUS with a non-zero exit; list is a table; bad usage says what was wrong.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { goodWar, maliciousCases } from "../../scripts/make-zip-corpus.js";
import { runCli } from "../support/cli.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

let env: DevEnv;
const dir = mkdtempSync(path.join(os.tmpdir(), "tp-deploy-cli-"));

const cli = (...args: string[]) => runCli(env, ...args);

beforeAll(async () => {
  env = await startDevEnv();
}, 60_000);

afterAll(async () => {
  await env?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("trustplane deploy CLI", () => {
  it("pushes a WAR with progress and live stages, lists, gets and undeploys it", async () => {
    const war = path.join(dir, "orders.war");
    writeFileSync(war, goodWar());
    const pushed = await cli("deploy", "push", war, "--account", "acme", "--application", "shop", "--component", "web");
    expect(pushed.code).toBe(0);
    expect(pushed.stderr).toContain("upload orders.war");
    for (const stage of ["RECEIVING", "QUARANTINED", "VALIDATING", "POST_PROCESSING", "STORED"]) expect(pushed.stderr).toContain(stage);
    const op = /^(op_[0-9a-f]+)\s+acme\/shop\/web\s+STORED/m.exec(pushed.stdout)?.[1];
    expect(op).toBeTruthy();
    expect(pushed.stdout).toMatch(/roles: .*admin/);

    const list = await cli("deploy", "list", "--account", "acme");
    expect(list.stdout).toMatch(/OPERATION\s+ACCOUNT\/APP\/COMPONENT\s+STATUS\s+FILE/);
    expect(list.stdout).toMatch(new RegExp(`${op}\\s+acme/shop/web\\s+STORED\\s+orders\\.war`));
    const got = await cli("deploy", "get", op!, "--json");
    expect(JSON.parse(got.stdout)).toMatchObject({ operationId: op, status: "DEPLOYMENT_STATUS_STORED" });
    const gone = await cli("deploy", "undeploy", op!);
    expect(gone.stdout).toContain("UNDEPLOYED");
  }, 60_000);

  it("a malicious archive ends MALICIOUS with its reason and a non-zero exit", async () => {
    const slip = path.join(dir, "slip.war");
    writeFileSync(slip, maliciousCases().find((c) => c.file === "zip-slip-unix.zip")!.bytes);
    const r = await cli("deploy", "push", slip, "--account", "acme", "--application", "shop", "--component", "web");
    expect(r.code).toBe(4);
    expect(r.stdout).toContain("MALICIOUS (ARCHIVE_PATH_TRAVERSAL");
  }, 60_000);

  it("says what was wrong with bad usage", async () => {
    const noAac = await cli("deploy", "push", path.join(dir, "orders.war"));
    expect(noAac.code).not.toBe(0);
    expect(noAac.stderr).toContain("--account, --application and --component are required");
    const missing = await cli("deploy", "push", path.join(dir, "nope.war"), "--account", "acme", "--application", "shop", "--component", "web");
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("cannot read");
    const badName = await cli("deploy", "push", path.join(dir, "orders.war"), "--account", "Acme Corp", "--application", "shop", "--component", "web");
    expect(badName.stderr).toContain("aac.account");
    const unknown = await cli("deploy", "get", "op_does_not_exist");
    expect(unknown.stderr).toContain("DEPLOYMENT_NOT_FOUND");
  }, 60_000);
});
