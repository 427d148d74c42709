// `trustplane sa …` and `trustplane token inspect` as a user runs them against `trustplane dev`:
// accounts created, granted and listed as a table; a minted token decoded and verified against
// the server's JWKS; a tampered one reported INVALID with a non-zero exit.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { signVmCreateRequest } from "../../sdk/src/token/index.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const run = promisify(execFile);
const CLI = path.resolve("server/bin/trustplane.mjs");
let env: DevEnv;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args, "--server", env.dev.server.address, "--data-dir", env.config.dataDir]);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

beforeAll(async () => {
  env = await startDevEnv();
}, 60_000);

afterAll(async () => {
  await env?.stop();
});

describe("trustplane sa / token CLI", () => {
  it("creates, grants and lists service accounts, and inspects a minted token", async () => {
    expect((await cli("sa", "define-service", "files", "--audience", "https://files.test", "--scope", "files.read")).code).toBe(0);
    const created = await cli("sa", "create", "cli@proj.trustplane", "--display-name", "CLI account");
    expect(created.stdout).toContain("created service account cli@proj.trustplane");
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    const user = generateSigningKey("Ed25519");
    await auth.createPrincipal({ requestId: "cli-u", name: "dana", kind: "user" });
    await auth.addKey({ requestId: "cli-k", principal: "dana", jwk: JSON.stringify(user.publicJwk) });
    auth.close();
    expect((await cli("sa", "grant", "cli@proj.trustplane", "dana")).stdout).toContain("act-as dana");
    const list = await cli("sa", "list");
    expect(list.stdout).toMatch(/EMAIL\s+DISPLAY NAME\s+ACT AS/);
    expect(list.stdout).toMatch(/cli@proj\.trustplane\s+CLI account\s+dana/);

    const admin = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const issued = await admin.issueLongTermToken({
        requestId: "cli-issue",
        serviceAccount: "cli@proj.trustplane",
        scopes: ["files.read"],
        hostId: DEV_HOST_ID,
        vmId: "vm-cli",
        userRequest: signVmCreateRequest({ requestId: "c1", name: "vm-cli", serviceAccounts: [{ email: "cli@proj.trustplane", scopes: ["files.read"] }] }, [user]),
      });
      const minted = await host.mintAccessToken({ longTermToken: issued.token, hostId: DEV_HOST_ID, vmId: "vm-cli", scopes: [] });
      const ok = await cli("token", "inspect", minted.accessToken);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toMatch(/sub\s+cli@proj\.trustplane/);
      expect(ok.stdout).toMatch(/scope\s+files\.read/);
      expect(ok.stdout).toContain("signature: valid");
      const parts = minted.accessToken.split(".");
      const tampered = [parts[0], Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(parts[1]!, "base64url").toString()), scope: "files.read files.write" })).toString("base64url"), parts[2]].join(".");
      const bad = await cli("token", "inspect", tampered);
      expect(bad.code).toBe(1);
      expect(bad.stdout).toContain("signature: INVALID");
    } finally {
      admin.close();
      host.close();
    }
  }, 60_000);
});
