// Replay protection across restarts of a single-process `trustplane dev` (SQLite, replay cache
// in memory): a graceful stop hands every unexpired nonce to the next start, so a call
// captured before the restart is still NONCE_REPLAYED after it; after a crash (no snapshot)
// the server refuses every call signed before it started (SIGNED_BEFORE_RESTART) instead of
// accepting a replay it cannot detect.
import * as grpc from "@grpc/grpc-js";
import type { JsonWebKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { canonicalEncode, importSigningKey, signCall } from "../../sdk/src/auth/index.js";
import { AuthServiceService, EchoRequest } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { startDev, type DevHandle } from "../../server/src/processes/dev-process.js";
import { NONCE_SNAPSHOT_FILE } from "../../server/src/runtime/auth/nonce-snapshot-file.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";

const dataDir = mkdtempSync(path.join(os.tmpdir(), "tp-restart-replay-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const dev = (): Promise<DevHandle> =>
  startDev(loadConfig({ env: {}, flags: { dataDir, listen: "127.0.0.1:0", agentListen: "127.0.0.1:0", logLevel: "warn" } }), createLogger({ level: "warn", destination: new PassThrough().resume() }));

function raw(address: string, bytes: Uint8Array, md: grpc.Metadata): Promise<string> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) =>
    client.makeUnaryRequest(AuthServiceService.echo.path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), md, {}, (err) => {
      client.close();
      resolve(err ? String(err.metadata.get("tp-reason")[0] ?? err.code) : "OK");
    }),
  );
}

describe("replay protection across restarts", () => {
  it("a graceful restart keeps the replay cache; a crash refuses what it cannot check", async () => {
    let handle = await dev();
    const admin = importSigningKey(JSON.parse(readFileSync(handle.adminKeyFile, "utf8")) as JsonWebKey);
    const bytes = canonicalEncode(EchoRequest, { message: "captured" });
    const s = signCall({ method: AuthServiceService.echo.path, requestBytes: bytes, key: admin });
    const md = () => {
      const m = new grpc.Metadata();
      m.set("tp-statement-bin", Buffer.from(s.statement));
      m.set("tp-signature-bin", Buffer.from(s.signature));
      m.set("tp-key-id", s.keyId);
      return m;
    };
    expect(await raw(handle.server.address, bytes, md())).toBe("OK");
    await handle.shutdown();
    expect(existsSync(path.join(dataDir, NONCE_SNAPSHOT_FILE))).toBe(true);

    handle = await dev();
    // Taken over and deleted at once, so a later crash cannot hand over a stale copy.
    expect(existsSync(path.join(dataDir, NONCE_SNAPSHOT_FILE))).toBe(false);
    expect(await raw(handle.server.address, bytes, md())).toBe("NONCE_REPLAYED");
    await handle.shutdown();

    // A crash leaves no snapshot behind.
    rmSync(path.join(dataDir, NONCE_SNAPSHOT_FILE));
    handle = await dev();
    try {
      expect(await raw(handle.server.address, bytes, md())).toBe("SIGNED_BEFORE_RESTART");
    } finally {
      await handle.shutdown();
    }
  }, 120_000);
});
