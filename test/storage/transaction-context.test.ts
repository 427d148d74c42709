// Transactions are found through AsyncLocalStorage, which async work spawned inside one (a
// timer, a fire-and-forget promise) inherits. Such work may run after the transaction ended
// — on PostgreSQL its client is then back in the pool serving someone else — so it must run
// as ordinary work, on both backends: its own transaction() is a real one, and rolls back.
import { afterAll, describe, expect, it } from "vitest";
import { Storage } from "../../server/src/runtime/storage/storage.js";
import { backends } from "../support/backends.js";

describe.each(backends())("transaction context on $name", (backend) => {
  afterAll(() => backend.cleanup());

  it("work spawned inside a transaction that runs after it ended is not part of it", async () => {
    const s = await Storage.open(await backend.fresh());
    try {
      await s.db.run("CREATE TABLE tx_probe (name TEXT PRIMARY KEY)");
      let later: Promise<unknown> = Promise.resolve();
      await s.db.transaction(async () => {
        await s.db.run("INSERT INTO tx_probe (name) VALUES (?)", ["outer"]);
        later = new Promise((r) => setTimeout(r, 30)).then(() =>
          s.db
            .transaction(async () => {
              await s.db.run("INSERT INTO tx_probe (name) VALUES (?)", ["spawned"]);
              throw new Error("spawned work fails half-way");
            })
            .catch(() => undefined),
        );
      });
      await later;
      // The spawned transaction was a real one: its insert rolled back with it.
      const rows = await s.db.all<{ name: string }>("SELECT name FROM tx_probe ORDER BY name");
      expect(rows.map((r) => r.name)).toEqual(["outer"]);
    } finally {
      await s.close();
    }
  });
});
