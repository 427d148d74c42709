// The token area wired into the real processes (`trustplane dev`: server + agent), on SQLite
// and PostgreSQL: service account + ACL, a long-term token issued against the user's signed
// create request, a VM's metadata endpoint on the agent, tokens that verify against the JWKS
// URL, rotation and revocation pushed to the agent, and the attacks of issue 3 refused.
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportPrivateJwk, generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { signVmCreateRequest, verifyAccessToken } from "../../sdk/src/token/index.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { startServer, type ServerHandle } from "../../server/src/processes/server-process.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { hostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { openSealedToken } from "../../server/src/token/authority/host-token-sealer.js";
import { importX25519Jwk } from "../../sdk/src/envelope/index.js";
import { devVariants, dropDevVariant, prepareDevVariant } from "../support/backends.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { until as waitUntil } from "../support/until.js";
import { refused as refusal } from "../support/refused.js";

const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000) => waitUntil(what, probe, timeoutMs);

const variants = devVariants("tp_token");



const META = { "Metadata-Flavor": "Google" };

describe.each(variants)("token area in the dev processes ($name)", (variant) => {
  let env: DevEnv;
  let admin: ReturnType<typeof createClient<typeof TokenServiceService>>;
  let auth: ReturnType<typeof createClient<typeof AuthServiceService>>;
  let alice: SigningKey;
  let bob: SigningKey;
  const account = "builder@proj.trustplane";
  const other = "deployer@proj.trustplane";
  let jwksUrl = "";
  let issuer = "";

  beforeAll(async () => {
    env = await startDevEnv(await prepareDevVariant(variant));
    const address = env.dev.server.address;
    admin = createClient(TokenServiceService, address, { key: env.admin });
    auth = createClient(AuthServiceService, address, { key: env.admin });
    alice = generateSigningKey("Ed25519");
    bob = generateSigningKey("Ed25519");
    for (const [name, key] of [
      ["alice", alice],
      ["bob", bob],
    ] as const) {
      await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user" });
      await auth.addKey({ requestId: `k-${name}`, principal: name, jwk: JSON.stringify(key.publicJwk) });
    }
    await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read", "storage.write"] } });
    await admin.createServiceAccount({ requestId: "sa1", email: account, displayName: "Builder" });
    await admin.createServiceAccount({ requestId: "sa2", email: other });
    await admin.grantActAs({ requestId: "g1", email: account, principal: "alice" });
    await admin.grantActAs({ requestId: "g2", email: other, principal: "alice" });
    ({ jwksUrl, issuer } = await admin.getJwks({}));
  }, 60_000);

  afterAll(async () => {
    admin?.close();
    auth?.close();
    await env?.stop();
    await dropDevVariant(variant);
  });

  const createRequest = (user: SigningKey, email: string, name = `vm-${randomBytes(3).toString("hex")}`) =>
    signVmCreateRequest({ requestId: randomBytes(8).toString("hex"), name, serviceAccounts: [{ email, scopes: ["storage.read"] }] }, [user]);

  async function issue(vmId: string, email = account, user = alice) {
    return admin.issueLongTermToken({ requestId: `issue-${vmId}-${email}`, serviceAccount: email, scopes: ["storage.read"], hostId: DEV_HOST_ID, vmId, userRequest: createRequest(user, email) });
  }

  async function attach(vmId: string, accounts: { email: string; res: Awaited<ReturnType<typeof issue>> }[]) {
    const manager = hostTokenManager(DEV_HOST_ID)!;
    return manager.attachVm({
      vmId,
      hostname: vmId,
      projectId: "proj",
      accounts: accounts.map(({ email, res }) => ({
        email,
        scopes: res.info!.scopes,
        longTermToken: res.token,
        accessor: res.info!.accessor,
        version: res.info!.version,
        issuedAtMs: res.info!.issuedAtMs,
        expiresAtMs: res.info!.expiresAtMs,
      })),
    });
  }

  it("issues against the user's envelope, serves a VM token that verifies against the JWKS URL, and follows revocation", async () => {
    const issued = await issue("vm-a");
    expect(issued.token).toMatch(/^tplt_/);
    expect(issued.info!.holders).toEqual([{ vmId: "vm-a", hostId: DEV_HOST_ID }]);
    const at = await attach("vm-a", [{ email: account, res: issued }]);
    const base = `http://${at.host}:${at.port}/computeMetadata/v1/instance/service-accounts`;
    const res = await fetch(`${base}/default/token`, { headers: META });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { access_token: string; token_type: string; expires_in: number };
    expect(body.token_type).toBe("Bearer");
    const claims = await verifyAccessToken(body.access_token, { jwksUrl, issuer, audience: "https://storage.test", requiredScopes: ["storage.read"] });
    expect(claims.sub).toBe(account);
    expect(claims.tp_vm).toBe("vm-a");
    expect(claims.tp_host).toBe(DEV_HOST_ID);

    // A forged token (signed by a key not in the JWKS) is refused at the resource server.
    const forged = body.access_token.split(".").slice(0, 2).join(".") + "." + Buffer.from(randomBytes(64)).toString("base64url");
    expect((await refusal(verifyAccessToken(forged, { jwksUrl, issuer, audience: "https://storage.test" }))).status).toBe("UNAUTHENTICATED");

    // Identity tokens carry the audience the guest chose.
    const id = await fetch(`${base}/default/identity?audience=${encodeURIComponent("https://aud.example")}`, { headers: META });
    expect(id.status).toBe(200);
    const idClaims = JSON.parse(Buffer.from((await id.text()).split(".")[1]!, "base64url").toString()) as { aud: string; sub: string };
    expect(idClaims).toMatchObject({ aud: "https://aud.example", sub: account });

    // Rotation reaches the agent over the push stream; the endpoint keeps answering.
    await admin.rotateLongTermToken({ requestId: "rot-a", accessor: issued.info!.accessor });
    const vm = hostTokenManager(DEV_HOST_ID)!.vm("vm-a")!;
    await until("rotation pushed to the agent", () => (vm.heldVersion(account) === 2 ? true : undefined));
    expect((await fetch(`${base}/default/token`, { headers: META })).status).toBe(200);

    // The host renewing (as its agent does at half-life) makes a new version for every holder.
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const renewed = await host.renewLongTermToken({ requestId: "renew-a", token: issued.token, hostId: DEV_HOST_ID }).catch((e: TrustplaneError) => e);
      // The original secret was rotated out, but its grace period still covers it.
      expect(renewed).not.toBeInstanceOf(TrustplaneError);
      expect((renewed as { version: number }).version).toBe(3);
      await until("renewal pushed to the agent", () => (vm.heldVersion(account) === 3 ? true : undefined));
    } finally {
      host.close();
    }

    // Revocation: the agent drops the account and its cached tokens at once.
    await admin.revokeLongTermToken({ requestId: "rev-a", accessor: issued.info!.accessor });
    await until("revocation pushed to the agent", async () => ((await fetch(`${base}/default/token`, { headers: META })).status === 404 ? true : undefined));
    const audit = await auth.listAuditRecords({ pageSize: 1000 });
    const actions = audit.records.map((r) => r.action);
    for (const a of ["token.service.define", "token.service_account.create", "token.service_account.grant", "token.long_term.issue", "token.long_term.rotate", "token.long_term.revoke"]) {
      expect(actions).toContain(a);
    }
    await hostTokenManager(DEV_HOST_ID)!.detachVm("vm-a");
  }, 60_000);

  it("deleting an account revokes its tokens and the agent drops them; allowed_scopes bounds what may be issued", async () => {
    const doomed = "doomed@proj.trustplane";
    await admin.createServiceAccount({ requestId: "sa-doomed", email: doomed, allowedScopes: ["storage.read"] });
    expect((await admin.getServiceAccount({ email: doomed })).account!.allowedScopes).toEqual(["storage.read"]);
    await admin.grantActAs({ requestId: "g-doomed", email: doomed, principal: "alice" });
    const beyond = await refusal(
      admin.issueLongTermToken({
        requestId: "doomed-write",
        serviceAccount: doomed,
        scopes: ["storage.read", "storage.write"],
        hostId: DEV_HOST_ID,
        vmId: "vm-d0",
        userRequest: signVmCreateRequest({ requestId: "d0", name: "d0", serviceAccounts: [{ email: doomed, scopes: ["storage.read", "storage.write"] }] }, [alice]),
      }),
    );
    expect([beyond.status, beyond.reason]).toEqual(["PERMISSION_DENIED", "SCOPE_NOT_ALLOWED"]);
    const issued = await issue("vm-d1", doomed);
    const at = await attach("vm-d1", [{ email: doomed, res: issued }]);
    const url = `http://${at.host}:${at.port}/computeMetadata/v1/instance/service-accounts/${doomed}/token`;
    expect((await fetch(url, { headers: META })).status).toBe(200);
    await admin.deleteServiceAccount({ requestId: "del-doomed", email: doomed });
    expect((await admin.getLongTermToken({ accessor: issued.info!.accessor })).info).toMatchObject({ revoked: true, revokeReason: "ACCOUNT_DELETED" });
    await until("the agent dropped the deleted account", () => (hostTokenManager(DEV_HOST_ID)!.vm("vm-d1")!.heldVersion(doomed) === undefined ? true : undefined));
    expect((await fetch(url, { headers: META })).status).toBe(404);
    await hostTokenManager(DEV_HOST_ID)!.detachVm("vm-d1");
  });

  it("refuses a create request whose user is not on the account's ACL", async () => {
    const e = await refusal(issue("vm-bob", account, bob));
    expect(e.status).toBe("PERMISSION_DENIED");
    expect(e.reason).toBe("NOT_ON_ACL");
  });

  it("refuses a replayed user envelope, for the same VM or another", async () => {
    const envelope = createRequest(alice, other);
    const first = await admin.issueLongTermToken({ requestId: "rp-1", serviceAccount: other, scopes: ["storage.read"], hostId: DEV_HOST_ID, vmId: "vm-r", userRequest: envelope });
    expect(first.token).toMatch(/^tplt_/);
    for (const vmId of ["vm-r", "vm-r2"]) {
      const e = await refusal(admin.issueLongTermToken({ requestId: `rp-${vmId}-again`, serviceAccount: other, scopes: ["storage.read"], hostId: DEV_HOST_ID, vmId, userRequest: envelope }));
      expect(e.status).toBe("PERMISSION_DENIED");
      expect(e.reason).toBe("USER_REQUEST_REPLAYED");
    }
    await admin.revokeLongTermToken({ requestId: "rp-rev", accessor: first.info!.accessor });
  });

  it("refuses an envelope that does not ask for the account, or is not signed by a registered user key", async () => {
    const wrongAccount = await refusal(
      admin.issueLongTermToken({ requestId: "wa", serviceAccount: account, scopes: ["storage.read"], hostId: DEV_HOST_ID, vmId: "vm-w", userRequest: createRequest(alice, other) }),
    );
    expect(wrongAccount.reason).toBe("USER_REQUEST_MISMATCH");
    const stranger = generateSigningKey("Ed25519");
    const unknown = await refusal(
      admin.issueLongTermToken({ requestId: "uk", serviceAccount: account, scopes: ["storage.read"], hostId: DEV_HOST_ID, vmId: "vm-u", userRequest: createRequest(stranger, account) }),
    );
    expect(unknown.status).toBe("UNAUTHENTICATED");
  });

  it("keeps each VM to its own tokens: other VM's account is 404, minting for a VM that does not hold the token is refused", async () => {
    const a = await issue("vm-1", account);
    const b = await issue("vm-2", other);
    const at1 = await attach("vm-1", [{ email: account, res: a }]);
    const at2 = await attach("vm-2", [{ email: other, res: b }]);
    expect(at1.port).not.toBe(at2.port);
    const fromVm2 = await fetch(`http://${at2.host}:${at2.port}/computeMetadata/v1/instance/service-accounts/${account}/token`, { headers: META });
    expect(fromVm2.status).toBe(404);

    // The host itself (its own key) asking the authority for vm-2 with vm-1's long-term token.
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const notHolder = await refusal(host.mintAccessToken({ longTermToken: a.token, hostId: DEV_HOST_ID, vmId: "vm-2", scopes: [] }));
      expect(notHolder.status).toBe("PERMISSION_DENIED");
      expect(notHolder.reason).toBe("VM_NOT_HOLDER");
      const otherHost = await refusal(host.mintAccessToken({ longTermToken: a.token, hostId: "some-other-host", vmId: "vm-1", scopes: [] }));
      expect(otherHost.reason).toBe("HOST_MISMATCH");
      const escalation = await refusal(host.mintAccessToken({ longTermToken: a.token, hostId: DEV_HOST_ID, vmId: "vm-1", scopes: ["storage.write"] }));
      expect(escalation.reason).toBe("SCOPE_ESCALATION");
      const ok = await host.mintAccessToken({ longTermToken: a.token, hostId: DEV_HOST_ID, vmId: "vm-1", scopes: [] });
      expect(ok.tokenType).toBe("Bearer");
      // A host may not administer accounts.
      const denied = await refusal(host.createServiceAccount({ requestId: "h-sa", email: "evil@proj.trustplane" }));
      expect(denied.status).toBe("PERMISSION_DENIED");
    } finally {
      host.close();
    }
    await hostTokenManager(DEV_HOST_ID)!.detachVm("vm-1");
    await hostTokenManager(DEV_HOST_ID)!.detachVm("vm-2");
  }, 30_000);

  it("shares one long-term token between two VMs on the host without a new secret (held_version)", async () => {
    const sharer = "sharer@proj.trustplane";
    await admin.createServiceAccount({ requestId: "sa-share", email: sharer });
    await admin.grantActAs({ requestId: "g-share", email: sharer, principal: "alice" });
    const account = sharer;
    const first = await issue("vm-s1", account);
    await attach("vm-s1", [{ email: account, res: first }]);
    const second = await admin.issueLongTermToken({
      requestId: "share-2",
      serviceAccount: account,
      scopes: ["storage.read"],
      hostId: DEV_HOST_ID,
      vmId: "vm-s2",
      heldVersion: first.info!.version,
      userRequest: createRequest(alice, account),
    });
    expect(second.token).toBe("");
    expect(second.info!.accessor).toBe(first.info!.accessor);
    expect(second.info!.version).toBe(first.info!.version);
    expect(second.info!.vmIds.sort()).toEqual(["vm-s1", "vm-s2"]);
    const manager = hostTokenManager(DEV_HOST_ID)!;
    const at = await manager.attachVm({ vmId: "vm-s2", hostname: "vm-s2", projectId: "proj", accounts: [{ email: account, scopes: ["storage.read"], longTermToken: "", accessor: second.info!.accessor }] });
    const res = await fetch(`http://${at.host}:${at.port}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: META });
    expect(res.status).toBe(200);
    const claims = await verifyAccessToken(((await res.json()) as { access_token: string }).access_token, { jwksUrl, issuer, audience: "https://storage.test" });
    expect(claims.tp_vm).toBe("vm-s2");
    // Releasing one VM keeps the token for the other; releasing the last revokes it.
    expect((await admin.releaseLongTermToken({ requestId: "rel-1", accessor: first.info!.accessor, vmId: "vm-s1" })).revoked).toBe(false);
    expect((await admin.releaseLongTermToken({ requestId: "rel-2", accessor: first.info!.accessor, vmId: "vm-s2" })).revoked).toBe(true);
    await until("last-holder revocation pushed", () => (manager.vm("vm-s2")!.heldVersion(account) === undefined ? true : undefined));
    await manager.detachVm("vm-s1");
    await manager.detachVm("vm-s2");
  }, 30_000);

  it("a watch stream resumed after a gap replays the rotations it missed, sealed to the host", async () => {
    const sa = "resumer@proj.trustplane";
    await admin.createServiceAccount({ requestId: "sa-res", email: sa });
    await admin.grantActAs({ requestId: "g-res", email: sa, principal: "alice" });
    const issued = await issue("vm-res", sa);
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    const sealing = importX25519Jwk(JSON.parse(readFileSync(path.join(env.config.dataDir, "agent", DEV_HOST_ID, "host-sealing.jwk.json"), "utf8")));
    try {
      const first = host.watchTokenUpdates({ hostId: DEV_HOST_ID, afterSeq: 0 });
      const it1 = first[Symbol.asyncIterator]();
      const pending = it1.next();
      await new Promise((r) => setTimeout(r, 100)); // subscribed before the rotation
      await admin.rotateLongTermToken({ requestId: "res-rot-1", accessor: issued.info!.accessor });
      const m1 = (await pending).value as { seq: number; replicaId: string; accessor: string };
      expect(m1.accessor).toBe(issued.info!.accessor);
      first.cancel();
      // Missed while disconnected:
      await admin.rotateLongTermToken({ requestId: "res-rot-2", accessor: issued.info!.accessor });
      const resumed = host.watchTokenUpdates({ hostId: DEV_HOST_ID, afterSeq: m1.seq, replicaId: m1.replicaId });
      let missed: { version: number; sealedToken: Uint8Array; accessor: string } | undefined;
      for await (const m of resumed) {
        if (m.accessor === issued.info!.accessor && m.version === issued.info!.version + 2) {
          missed = m;
          break;
        }
      }
      resumed.cancel();
      const secret = openSealedToken(sealing.privateKey!, DEV_HOST_ID, missed!.sealedToken);
      const minted = await host.mintAccessToken({ longTermToken: secret, hostId: DEV_HOST_ID, vmId: "vm-res", scopes: [] });
      expect(minted.tokenType).toBe("Bearer");
      // Sealed to this host only: another host's key cannot open it.
      expect(() => openSealedToken(new Uint8Array(32).fill(7), DEV_HOST_ID, missed!.sealedToken)).toThrow();
    } finally {
      host.close();
      await admin.revokeLongTermToken({ requestId: "res-rev", accessor: issued.info!.accessor });
    }
  }, 30_000);

  it.runIf(variant.name === "postgres")(
    "a rotation made on another replica reaches the agent through LISTEN/NOTIFY",
    async () => {
      const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-replica-"));
      let replica: ServerHandle | undefined;
      try {
        // A second replica shares the schema and the CA key (as replicas must).
        mkdirSync(path.join(dataDir, "server"), { recursive: true, mode: 0o700 });
        for (const f of ["ca.jwk.json", "service.jwk.json"]) copyFileSync(path.join(env.config.dataDir, "server", f), path.join(dataDir, "server", f));
        const adminFile = path.join(dataDir, "admin.jwk.json");
        const { writeFileSync } = await import("node:fs");
        writeFileSync(adminFile, JSON.stringify(exportPrivateJwk(env.admin)), { mode: 0o600 });
        const config = { ...loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "silent" } }), databaseUrl: variant.databaseUrl };
        replica = await startServer(config, createLogger({ level: "silent" }), { adminKeyFile: adminFile });
        const viaReplica = createClient(TokenServiceService, replica.address, { key: env.admin });
        try {
          const issued = await issue("vm-x");
          await attach("vm-x", [{ email: account, res: issued }]);
          const vm = hostTokenManager(DEV_HOST_ID)!.vm("vm-x")!;
          const before = vm.heldVersion(account)!;
          await viaReplica.rotateLongTermToken({ requestId: "rot-x", accessor: issued.info!.accessor });
          await until("rotation from the other replica", () => (vm.heldVersion(account) === before + 1 ? true : undefined));
          await viaReplica.revokeLongTermToken({ requestId: "rev-x", accessor: issued.info!.accessor });
          await until("revocation from the other replica", () => (vm.heldVersion(account) === undefined ? true : undefined));
        } finally {
          viaReplica.close();
          await hostTokenManager(DEV_HOST_ID)!.detachVm("vm-x");
        }
      } finally {
        await replica?.shutdown();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
