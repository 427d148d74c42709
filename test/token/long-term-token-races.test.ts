// Two token authorities (replicas) over one database racing on the same long-term token: no
// acquire loses a holder, every rotation gets its own version, a release racing an acquire
// leaves exactly the holders that remain. On SQLite (two connections to one file) and PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../server/src/runtime/storage/open-database.js";
import type { SqlDb } from "../../server/src/runtime/storage/sql-db.js";
import { LongTermTokens } from "../../server/src/token/authority/long-term-tokens.js";
import { ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { TokenUpdateHub, type DeliveredUpdate } from "../../server/src/token/authority/token-update-hub.js";
import { SqlLongTermTokenStore } from "../../server/src/token/store/sql-long-term-token-store.js";
import { SqlServiceAccountStore } from "../../server/src/token/store/sql-service-account-store.js";
import { backends } from "../support/backends.js";

const SA = "racer@p.trustplane";

describe.each(backends())("long-term token races between two replicas ($name)", (backend) => {
  let dbs: SqlDb[] = [];
  let replicas: { tokens: LongTermTokens; pushed: DeliveredUpdate[] }[] = [];

  beforeAll(async () => {
    const options = await backend.fresh();
    dbs = [await openDatabase(options), await openDatabase(options)];
    const registry = new ServiceAccountRegistry(new SqlServiceAccountStore(dbs[0]!));
    await registry.defineService({ name: "race", audience: "https://race", scopes: ["race.read"] });
    await registry.createAccount({ email: SA, actors: ["alice"] });
    replicas = dbs.map((db) => {
      const hub = new TokenUpdateHub();
      const pushed: DeliveredUpdate[] = [];
      hub.subscribe("h1", (u) => pushed.push(u));
      hub.subscribe("h2", (u) => pushed.push(u));
      return { tokens: new LongTermTokens({ store: new SqlLongTermTokenStore(db), accounts: new ServiceAccountRegistry(new SqlServiceAccountStore(db)), hub }), pushed };
    });
  });

  afterAll(async () => {
    for (const db of dbs) await db.close();
    await backend.cleanup();
  });

  const acquire = (r: number, vmId: string, hostId = r === 0 ? "h1" : "h2") =>
    replicas[r]!.tokens.acquire({ principal: "alice", serviceAccount: SA, scopes: ["race.read"], hostId, vmId, hostHasVersion: undefined });

  it("concurrent acquires on both replicas keep every holder and one live token", async () => {
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => acquire(i % 2, `vm-${i}`)));
    const accessors = new Set(results.map((r) => r.accessor));
    expect(accessors.size).toBe(1);
    const [accessor] = [...accessors];
    const record = await new SqlLongTermTokenStore(dbs[0]!).findByAccessor(accessor!);
    expect(record!.holders.map((h) => h.vmId).sort()).toEqual(Array.from({ length: 16 }, (_, i) => `vm-${i}`).sort());
    expect(record!.hostIds.sort()).toEqual(["h1", "h2"]);
    // Each acquire that made a new secret made its own version: versions never repeat.
    const versions = results.map((r) => r.version);
    expect(new Set(versions).size).toBe(versions.length);
    expect(record!.version).toBe(Math.max(...versions));
  }, 60_000);

  it("concurrent rotations each get their own version, and the newest secret is the one that works", async () => {
    const [{ accessor }] = [await acquire(0, "vm-0")];
    const before = (await new SqlLongTermTokenStore(dbs[0]!).findByAccessor(accessor))!.version;
    const rotations = await Promise.all(Array.from({ length: 12 }, (_, i) => replicas[i % 2]!.tokens.rotate(accessor)));
    const versions = rotations.map((r) => r.version).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 12 }, (_, i) => before + 1 + i));
    const newest = rotations.find((r) => r.version === before + 12)!;
    expect((await replicas[1]!.tokens.authenticate(newest.token!, "h1")).presentedVersion).toBe(before + 12);
  }, 60_000);

  it("releases racing acquires leave exactly the holders that stayed", async () => {
    const { accessor } = await acquire(0, "vm-0");
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 8; i++) {
      ops.push(replicas[i % 2]!.tokens.release({ accessor, vmId: `vm-${i}` }));
      ops.push(acquire((i + 1) % 2, `new-${i}`));
    }
    await Promise.all(ops);
    const record = (await new SqlLongTermTokenStore(dbs[0]!).findByAccessor(accessor))!;
    expect(record.revokedAtMs).toBeUndefined();
    const expected = [...Array.from({ length: 8 }, (_, i) => `vm-${i + 8}`), ...Array.from({ length: 8 }, (_, i) => `new-${i}`)].sort();
    expect(record.holders.map((h) => h.vmId).sort()).toEqual(expected);
  }, 60_000);
});
