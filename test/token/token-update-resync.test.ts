// Missed pushes are recovered (seed 000's "rotation and revocation pushed to every agent"): an
// agent whose stream cannot resume exactly tells the authority what it holds and is brought in
// line from storage (on `trustplane dev`, SQLite and PostgreSQL); a replica whose PostgreSQL
// LISTEN connection drops reconnects with backoff and makes its streams resynchronise.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { importX25519Jwk } from "../../sdk/src/envelope/index.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { TokenServiceService } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { signVmCreateRequest } from "../../sdk/src/token/index.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import { PostgresDb } from "../../server/src/runtime/storage/postgres-db.js";
import { HostTokenManager, hostTokenManager, watchUpdates } from "../../server/src/token/agent/token-agent-area.js";
import { openSealedToken } from "../../server/src/token/authority/host-token-sealer.js";
import { PostgresTokenUpdateBridge } from "../../server/src/token/authority/postgres-token-update-bridge.js";
import { TokenUpdateHub, type TokenUpdate } from "../../server/src/token/authority/token-update-hub.js";
import { PG_URL, devVariants, dropDevVariant, postgresBackend, prepareDevVariant } from "../support/backends.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";
import { until as waitUntil } from "../support/until.js";

const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000) => waitUntil(what, probe, timeoutMs);

const variants = devVariants("tp_resync");


describe.each(variants)("an agent that missed pushes resynchronises ($name)", (variant) => {
  let env: DevEnv;
  let admin: ReturnType<typeof createClient<typeof TokenServiceService>>;
  const alice = generateSigningKey("Ed25519");

  beforeAll(async () => {
    env = await startDevEnv(await prepareDevVariant(variant));
    admin = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    await auth.createPrincipal({ requestId: "p-alice", name: "alice", kind: "user" });
    await auth.addKey({ requestId: "k-alice", principal: "alice", jwk: JSON.stringify(alice.publicJwk) });
    auth.close();
    await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read"] } });
    for (const n of ["kept", "dropped", "noisy"]) {
      await admin.createServiceAccount({ requestId: `sa-${n}`, email: `${n}@proj.trustplane` });
      await admin.grantActAs({ requestId: `g-${n}`, email: `${n}@proj.trustplane`, principal: "alice" });
    }
  }, 60_000);

  afterAll(async () => {
    admin?.close();
    await env?.stop();
    await dropDevVariant(variant);
  });

  const issue = (email: string, vmId: string) =>
    admin.issueLongTermToken({
      requestId: `i-${email}-${vmId}`,
      serviceAccount: email,
      scopes: ["storage.read"],
      hostId: DEV_HOST_ID,
      vmId,
      userRequest: signVmCreateRequest({ requestId: randomBytes(8).toString("hex"), name: vmId, serviceAccounts: [{ email, scopes: ["storage.read"] }] }, [alice]),
    });

  it("after missing a rotation and a revocation (backlog overrun) it ends up with the current secret and without the revoked token", async () => {
    // A second token manager for the dev host, with the host's own keys, whose stream the test
    // can cut; the dev agent's own manager holds none of these tokens.
    const client = createClient(TokenServiceService, env.dev.server.address, { key: env.dev.agent.signingKey });
    const sealing = importX25519Jwk(JSON.parse(readFileSync(path.join(env.config.dataDir, "agent", DEV_HOST_ID, "host-sealing.jwk.json"), "utf8")));
    const manager = new HostTokenManager({ hostId: DEV_HOST_ID, client, unseal: (sealed) => openSealedToken(sealing.privateKey!, DEV_HOST_ID, sealed) });
    const kept = await issue("kept@proj.trustplane", "vm-r");
    const dropped = await issue("dropped@proj.trustplane", "vm-r");
    const noisy = await issue("noisy@proj.trustplane", "vm-noise");
    const grant = (email: string, r: typeof kept) => ({ email, scopes: ["storage.read"], longTermToken: r.token, accessor: r.info!.accessor, version: r.info!.version, issuedAtMs: r.info!.issuedAtMs, expiresAtMs: r.info!.expiresAtMs });
    const at = await manager.attachVm({ vmId: "vm-r", hostname: "vm-r", projectId: "proj", accounts: [grant("kept@proj.trustplane", kept), grant("dropped@proj.trustplane", dropped)] });
    const vm = manager.vm("vm-r")!;
    let watcher = watchUpdates({ client, hostId: DEV_HOST_ID, onUpdate: (m) => manager.apply(m), held: () => manager.listHeld() });
    try {
      // The stream is live once a push arrives on it (connected() only means the call began).
      let n = 0;
      await until("an update seen on the first stream", async () => {
        if (watcher.position().afterSeq > 0) return true;
        await admin.rotateLongTermToken({ requestId: `noise-0-${n++}`, accessor: noisy.info!.accessor });
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
      const position = watcher.position();
      watcher.stop();

      // While disconnected: more updates than the replica's backlog keeps, among them a
      // rotation and a revocation of tokens this VM holds.
      for (let i = 1; i <= 70; i++) await admin.rotateLongTermToken({ requestId: `noise-${i}`, accessor: noisy.info!.accessor });
      await admin.rotateLongTermToken({ requestId: "rot-kept", accessor: kept.info!.accessor });
      await admin.revokeLongTermToken({ requestId: "rev-dropped", accessor: dropped.info!.accessor });
      expect(vm.heldVersion("kept@proj.trustplane")).toBe(1);
      expect(vm.heldVersion("dropped@proj.trustplane")).toBe(1);

      watcher = watchUpdates({ client, hostId: DEV_HOST_ID, onUpdate: (m) => manager.apply(m), held: () => manager.listHeld(), resumeFrom: position });
      await until("the revoked token dropped", () => (vm.heldVersion("dropped@proj.trustplane") === undefined ? true : undefined));
      const current = await until("the current version installed", async () => {
        const info = (await admin.getLongTermToken({ accessor: kept.info!.accessor })).info!;
        return info.version > 2 && vm.heldVersion("kept@proj.trustplane") === info.version ? info.version : undefined;
      });
      // The missed secret was replaced (the authority cannot resend a hash), not resent.
      expect(current).toBe(3);
      const res = await fetch(`http://${at.host}:${at.port}/computeMetadata/v1/instance/service-accounts/kept@proj.trustplane/token`, { headers: { "Metadata-Flavor": "Google" } });
      expect(res.status).toBe(200);
      const audit = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
      const actions = (await audit.listAuditRecords({ pageSize: 1000 })).records.map((r) => r.action);
      audit.close();
      expect(actions).toContain("token.long_term.resync_rotate");
    } finally {
      watcher.stop();
      await manager.stop();
      client.close();
      await admin.revokeLongTermToken({ requestId: "rev-kept", accessor: kept.info!.accessor }).catch(() => undefined);
      await admin.revokeLongTermToken({ requestId: "rev-noisy", accessor: noisy.info!.accessor }).catch(() => undefined);
    }
  }, 60_000);
});

describe.skipIf(!PG_URL)("a replica whose LISTEN connection drops (trustplane dev on PostgreSQL)", () => {
  const schema = `tp_listen_${randomBytes(5).toString("hex")}`;
  let env: DevEnv;

  beforeAll(async () => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`CREATE SCHEMA ${schema}`);
    await c.end();
    const sep = PG_URL!.includes("?") ? "&" : "?";
    env = await startDevEnv({ databaseUrl: `${PG_URL}${sep}options=${encodeURIComponent(`-c search_path=${schema}`)}` });
  }, 60_000);

  afterAll(async () => {
    await env?.stop();
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  it("ends its agents' streams so they reconnect and resynchronise, and pushes arrive again", async () => {
    const admin = createClient(TokenServiceService, env.dev.server.address, { key: env.admin });
    const alice = generateSigningKey("Ed25519");
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    try {
      await auth.createPrincipal({ requestId: "p", name: "alice", kind: "user" });
      await auth.addKey({ requestId: "k", principal: "alice", jwk: JSON.stringify(alice.publicJwk) });
      await admin.defineService({ requestId: "svc", service: { service: "storage", audience: "https://storage.test", scopes: ["storage.read"] } });
      await admin.createServiceAccount({ requestId: "sa", email: "lis@proj.trustplane" });
      await admin.grantActAs({ requestId: "g", email: "lis@proj.trustplane", principal: "alice" });
      const issued = await admin.issueLongTermToken({
        requestId: "i",
        serviceAccount: "lis@proj.trustplane",
        scopes: ["storage.read"],
        hostId: DEV_HOST_ID,
        vmId: "vm-l",
        userRequest: signVmCreateRequest({ requestId: "c", name: "vm-l", serviceAccounts: [{ email: "lis@proj.trustplane", scopes: ["storage.read"] }] }, [alice]),
      });
      const manager = hostTokenManager(DEV_HOST_ID)!;
      await manager.attachVm({ vmId: "vm-l", hostname: "vm-l", projectId: "p", accounts: [{ email: "lis@proj.trustplane", scopes: ["storage.read"], longTermToken: issued.token, accessor: issued.info!.accessor, version: 1 }] });
      const vm = manager.vm("vm-l")!;
      await admin.rotateLongTermToken({ requestId: "r1", accessor: issued.info!.accessor });
      await until("first rotation pushed", () => (vm.heldVersion("lis@proj.trustplane") === 2 ? true : undefined));

      const killer = new pg.Client({ connectionString: PG_URL });
      await killer.connect();
      const { rows } = await killer.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE query = $1", [`LISTEN tp_token_updates_${schema}`]);
      expect(rows.length).toBe(1);
      await killer.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      await killer.end();
      await until("the replica re-established LISTEN", () => (env.logs().includes("token update LISTEN connection re-established") ? true : undefined));
      await until("the agent's stream ended for a resync", () => (env.logs().includes("TOKEN_UPDATES_GAP") ? true : undefined));
      await until("the agent resynchronised", () => (env.logs().includes("token updates resynchronised from storage") ? true : undefined));
      await admin.rotateLongTermToken({ requestId: "r2", accessor: issued.info!.accessor });
      await until("a rotation after the reconnect reaches the agent", () => (vm.heldVersion("lis@proj.trustplane")! >= 3 ? true : undefined));
      await manager.detachVm("vm-l");
    } finally {
      admin.close();
      auth.close();
    }
  }, 60_000);
});

describe.skipIf(!PG_URL)("the PostgreSQL LISTEN connection", () => {
  const backend = PG_URL ? postgresBackend(PG_URL) : undefined;
  afterAll(async () => {
    await backend?.cleanup();
  });

  it("reconnects with backoff after it is killed, and the hub makes its subscribers resynchronise", async () => {
    const options = await backend!.fresh();
    const [a, b] = [await openDatabase(options), await openDatabase(options)];
    const sender = await PostgresTokenUpdateBridge.open(a as PostgresDb);
    const receiver = await PostgresTokenUpdateBridge.open(b as PostgresDb, { minBackoffMs: 50, maxBackoffMs: 400 });
    const hub = new TokenUpdateHub();
    hub.attachBridge(receiver, { seal: async () => "sealed" });
    const got: TokenUpdate[] = [];
    let gaps = 0;
    hub.subscribe("h1", (u) => got.push(u), { onGap: () => gaps++ });
    const update: TokenUpdate = { kind: "REVOKED", hostId: "h1", accessor: "tpla_x", serviceAccount: "a@p", version: 1, reason: "TEST" };
    try {
      await sender.publish({ origin: "other", update });
      await until("delivered before the drop", () => (got.length === 1 ? true : undefined));
      const pid = await receiver.backendPid();
      const killer = new pg.Client({ connectionString: PG_URL });
      await killer.connect();
      await killer.query("SELECT pg_terminate_backend($1)", [pid]);
      await killer.end();
      await until("reconnected", () => (receiver.reconnects === 1 ? true : undefined));
      expect(gaps).toBe(1);
      expect(await receiver.backendPid()).not.toBe(pid);
      // A resume from before the gap is itself a gap: the backlog was dropped.
      let resumeGap = false;
      hub.subscribe("h1", () => undefined, { afterSeq: 1, onGap: () => (resumeGap = true) })();
      expect(resumeGap).toBe(true);
      await sender.publish({ origin: "other", update: { ...update, accessor: "tpla_y" } });
      await until("delivered after the reconnect", () => (got.length === 2 ? true : undefined));
    } finally {
      await sender.close();
      await receiver.close();
      await a.close();
      await b.close();
    }
  }, 30_000);
});
