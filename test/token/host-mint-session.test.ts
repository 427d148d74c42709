// Host mint sessions on `trustplane dev`: the agent mints with an HMAC session key opened by one
// Ed25519-signed call; the key is sealed to the host, cannot open another session, is the host's
// only (no admin opens one for it, no other host may mint with it), is revoked when it expires,
// and a revoked session key makes the agent fall back to its host key and reopen.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, importSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { importX25519Jwk } from "../../sdk/src/envelope/index.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { signVmCreateRequest } from "../../sdk/src/token/index.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { hostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { HostSessions } from "../../server/src/token/authority/host-sessions.js";
import { HostTokenSealer, openSealedToken } from "../../server/src/token/authority/host-token-sealer.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { refused as refusal } from "../support/refused.js";


describe("host mint sessions", () => {
  let env: DevEnv;
  let admin: ReturnType<typeof createClient<typeof TokenServiceService>>;
  let sealingPrivate: Uint8Array;
  const alice = generateSigningKey("Ed25519");
  const SA = "minter@proj.trustplane";

  beforeAll(async () => {
    env = await startDevEnv();
    admin = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    await auth.createPrincipal({ requestId: "p-alice", name: "alice", kind: "user" });
    await auth.addKey({ requestId: "k-alice", principal: "alice", jwk: JSON.stringify(alice.publicJwk) });
    auth.close();
    await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read"] } });
    await admin.createServiceAccount({ requestId: "sa", email: SA });
    await admin.grantActAs({ requestId: "g", email: SA, principal: "alice" });
    sealingPrivate = importX25519Jwk(JSON.parse(readFileSync(path.join(env.config.dataDir, "agent", DEV_HOST_ID, "host-sealing.jwk.json"), "utf8"))).privateKey!;
  }, 60_000);

  afterAll(async () => {
    admin?.close();
    await env?.stop();
  });

  const issue = (vmId: string) =>
    admin.issueLongTermToken({
      requestId: `i-${vmId}`,
      serviceAccount: SA,
      scopes: ["storage.read"],
      hostId: DEV_HOST_ID,
      vmId,
      userRequest: signVmCreateRequest({ requestId: `c-${vmId}`, name: vmId, serviceAccounts: [{ email: SA, scopes: ["storage.read"] }] }, [alice]),
    });

  it("the agent mints with a session key; a revoked one sends it back to its host key, then to a new session", async () => {
    const issued = await issue("vm-s");
    const manager = hostTokenManager(DEV_HOST_ID)!;
    const at = await manager.attachVm({ vmId: "vm-s", hostname: "vm-s", projectId: "proj", accounts: [{ email: SA, scopes: ["storage.read"], longTermToken: issued.token, accessor: issued.info!.accessor, version: 1 }] });
    const url = (aud: string) => `http://${at.host}:${at.port}/computeMetadata/v1/instance/service-accounts/default/identity?audience=${aud}`;
    const meta = { headers: { "Metadata-Flavor": "Google" } };
    expect((await fetch(url("https://a.example"), meta)).status).toBe(200);
    const session = manager.session()!;
    const first = session.keyId()!;
    expect(first).toBeTruthy();
    expect(session.stats.sessionCalls).toBeGreaterThan(0);
    const stored = await env.dev.server.storage.keys.get(first);
    expect(stored).toMatchObject({ principal: `host:${DEV_HOST_ID}`, algorithm: "HS256" });

    // Revoked (as expiry does): the next mint is refused at call verification, redone with the
    // host key, and the next one after that opens a new session.
    await env.dev.server.storage.keys.revoke(first, Date.now());
    await new Promise((r) => setTimeout(r, 2_100)); // the server's key cache lifetime
    const before = session.stats.hostKeyCalls;
    expect((await fetch(url("https://b.example"), meta)).status).toBe(200);
    expect(session.stats.hostKeyCalls).toBe(before + 1);
    expect((await fetch(url("https://c.example"), meta)).status).toBe(200);
    expect(session.keyId()).not.toBe(first);
    expect(session.keyId()).toBeTruthy();
    await manager.detachVm("vm-s");
  }, 30_000);

  it("a session key is sealed to its host, cannot open another session, and speaks only for its host; nobody else opens one", async () => {
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const res = await host.openHostSession({ requestId: "own", hostId: DEV_HOST_ID });
      // Opened only with this host's sealing key, and only as a session key (its own AAD).
      expect(() => openSealedToken(new Uint8Array(32).fill(9), DEV_HOST_ID, res.sealedKey, "host session")).toThrow();
      expect(() => openSealedToken(sealingPrivate, DEV_HOST_ID, res.sealedKey, "token update")).toThrow();
      const key = importSigningKey(openSealedToken(sealingPrivate, DEV_HOST_ID, res.sealedKey, "host session"));
      expect(key.keyId).toBe(res.keyId);
      const viaSession = createClient(TokenServiceService, env.dev.server.address, { key });
      try {
        const chained = await refusal(viaSession.openHostSession({ requestId: "chain", hostId: DEV_HOST_ID }));
        expect([chained.status, chained.reason]).toEqual(["PERMISSION_DENIED", "SESSION_KEY_CANNOT_OPEN_SESSION"]);
        const issued = await issue("vm-k");
        const ok = await viaSession.mintAccessToken({ longTermToken: issued.token, hostId: DEV_HOST_ID, vmId: "vm-k", scopes: [] });
        expect(ok.tokenType).toBe("Bearer");
        const elsewhere = await refusal(viaSession.mintAccessToken({ longTermToken: issued.token, hostId: "other-host", vmId: "vm-k", scopes: [] }));
        expect(elsewhere.reason).toBe("HOST_MISMATCH");
      } finally {
        viaSession.close();
      }
    } finally {
      host.close();
    }
    const byAdmin = await refusal(admin.openHostSession({ requestId: "adm", hostId: DEV_HOST_ID }));
    expect([byAdmin.status, byAdmin.reason]).toEqual(["PERMISSION_DENIED", "HOST_MISMATCH"]);
  }, 30_000);

  it("renews with the new secret sealed to the host when asked", async () => {
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const issued = await issue("vm-r");
      const renewed = await host.renewLongTermToken({ requestId: "renew-sealed", token: issued.token, hostId: DEV_HOST_ID, sealToHost: true });
      expect(renewed.token).toBe("");
      const secret = openSealedToken(sealingPrivate, DEV_HOST_ID, renewed.sealedToken);
      expect(secret).toMatch(/^tplt_/);
      expect((await host.mintAccessToken({ longTermToken: secret, hostId: DEV_HOST_ID, vmId: "vm-r", scopes: [] })).tokenType).toBe("Bearer");
    } finally {
      host.close();
    }
  });

  it("answers a batch of mints one by one, for the caller's own host only", async () => {
    const host = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    try {
      const issued = await issue("vm-b");
      const mint = (vmId: string, hostId = DEV_HOST_ID) => ({ longTermToken: issued.token, hostId, vmId, scopes: [], audience: "" });
      const res = await host.mintAccessTokens({ requests: [mint("vm-b"), mint("vm-not-holder"), mint("vm-b")] });
      expect(res.results.map((r) => r.errorReason || r.token!.tokenType)).toEqual(["Bearer", "VM_NOT_HOLDER", "Bearer"]);
      expect(res.results[1]!.errorStatus).toBe("PERMISSION_DENIED");
      // One item for another host refuses the whole call, before anything is minted.
      const foreign = await refusal(host.mintAccessTokens({ requests: [mint("vm-b"), mint("vm-b", "other-host")] }));
      expect([foreign.status, foreign.reason]).toEqual(["PERMISSION_DENIED", "HOST_MISMATCH"]);
      const huge = await refusal(host.mintAccessTokens({ requests: Array.from({ length: 65 }, () => mint("vm-b")) }));
      expect([huge.status, huge.reason]).toEqual(["INVALID_ARGUMENT", "BATCH_TOO_LARGE"]);
    } finally {
      host.close();
    }
  });

  it("revokes session keys past their lifetime, and keeps at most the newest two per host", async () => {
    let t = Date.now();
    const storage = env.dev.server.storage;
    const sessions = new HostSessions({ storage, sealer: new HostTokenSealer(storage.hosts), ttlMs: 60_000, now: () => t });
    const hostKeyId = env.dev.agent.signingKey.keyId;
    const a = await sessions.open(DEV_HOST_ID, hostKeyId);
    t += 1;
    const b = await sessions.open(DEV_HOST_ID, hostKeyId);
    t += 1;
    const c = await sessions.open(DEV_HOST_ID, hostKeyId);
    expect((await storage.keys.get(a.keyId))!.revokedAtMs).not.toBeNull();
    expect((await storage.keys.get(b.keyId))!.revokedAtMs).toBeNull();
    t += 60_000;
    const expired = await sessions.expire();
    expect(expired).toEqual(expect.arrayContaining([b.keyId, c.keyId]));
    expect((await storage.keys.get(c.keyId))!.revokedAtMs).not.toBeNull();
  });
});
