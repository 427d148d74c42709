// Responses kept for idempotent replay are sealed at rest: a join token (a secret) returned by
// CreateJoinToken never appears in the database, yet the same request_id still gets the same
// token back; a tampered record is refused rather than replayed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

let env: DevEnv;
beforeAll(async () => {
  env = await startDevEnv();
}, 60_000);
afterAll(async () => env?.stop());

describe("idempotency records at rest", () => {
  it("never hold a returned secret in clear, and still replay it", async () => {
    const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
    try {
      const first = await auth.createJoinToken({ requestId: "join-at-rest", hostId: "host-x", ttlSeconds: 600 });
      const again = await auth.createJoinToken({ requestId: "join-at-rest", hostId: "host-x", ttlSeconds: 600 });
      expect(again.joinToken).toBe(first.joinToken);
      const rows = await env.dev.server.storage.db.all<{ response: Buffer }>("SELECT response FROM idempotency");
      const secret = first.joinToken.slice(first.joinToken.indexOf("_") + 1);
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) {
        expect(Buffer.from(r.response).includes(Buffer.from(secret))).toBe(false);
        expect(Buffer.from(r.response).toString("base64")).not.toContain(Buffer.from(secret).toString("base64").slice(0, 20));
      }
      // Flip one byte of the sealed record: the replay is refused, not answered with garbage.
      const mine = (await env.dev.server.storage.db.get<{ response: Buffer }>("SELECT response FROM idempotency WHERE request_id = ?", ["join-at-rest"]))!;
      const flipped = Buffer.from(mine.response);
      flipped[flipped.length - 1]! ^= 1;
      await env.dev.server.storage.db.run("UPDATE idempotency SET response = ? WHERE request_id = ?", [flipped, "join-at-rest"]);
      await expect(auth.createJoinToken({ requestId: "join-at-rest", hostId: "host-x", ttlSeconds: 600 })).rejects.toMatchObject({ reason: "IDEMPOTENCY_RECORD_INVALID" });
    } finally {
      auth.close();
    }
  });
});
