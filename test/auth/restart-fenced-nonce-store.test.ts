// The restart fence for in-memory call nonces (agents): after a restart every nonce the previous
// run may have accepted is refused (SIGNED_BEFORE_RESTART), fresh ones pass, the mark on disk
// is raised before a nonce beyond it is accepted, and a torn last line is ignored.
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { RestartFencedNonceStore } from "../../server/src/runtime/auth/restart-fenced-nonce-store.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-fence-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function reasonOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (e instanceof TrustplaneError ? e.reason : String(e)),
  );
}

describe("RestartFencedNonceStore", () => {
  it("refuses after a restart what the previous run may have accepted, and accepts what it cannot have", async () => {
    const file = path.join(dir, "a");
    const now = Date.now();
    const first = RestartFencedNonceStore.open(new MemoryNonceStore(), file);
    const seen = randomBytes(16);
    expect(await first.remember(seen, now + 300_000)).toBe(true);
    // Within the run the inner cache answers as always.
    expect(await first.remember(seen, now + 300_000)).toBe(false);
    first.close();

    const second = RestartFencedNonceStore.open(new MemoryNonceStore(), file);
    expect(await reasonOf(second.remember(seen, now + 300_000))).toBe("SIGNED_BEFORE_RESTART");
    // Not seen before, but signed no later than the last accepted call: it might have been.
    expect(await reasonOf(second.remember(randomBytes(16), now + 300_000 - 1))).toBe("SIGNED_BEFORE_RESTART");
    expect(await second.remember(randomBytes(16), second.fence + 1)).toBe(true);
    second.close();
  });

  it("raises the mark on disk before it accepts a nonce beyond it; concurrent ones share one write", async () => {
    const file = path.join(dir, "b");
    const store = RestartFencedNonceStore.open(new MemoryNonceStore(), file);
    const base = Date.now() + 300_000;
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.remember(randomBytes(16), base + i)));
    const marks = readFileSync(file, "utf8").split("\n").filter(Boolean).map(Number);
    expect(Math.max(...marks)).toBeGreaterThanOrEqual(base + 19);
    expect(marks.length).toBeLessThanOrEqual(3);
    // Inside the margin no further write is needed.
    await store.remember(randomBytes(16), base + 100);
    expect(readFileSync(file, "utf8").split("\n").filter(Boolean)).toHaveLength(marks.length);
    store.close();
  });

  it("ignores a torn last line (its write never completed, so nothing relied on it)", async () => {
    const file = path.join(dir, "c");
    RestartFencedNonceStore.open(new MemoryNonceStore(), file).close();
    appendFileSync(file, "5000\n9999999999999");
    const store = RestartFencedNonceStore.open(new MemoryNonceStore(), file);
    expect(store.fence).toBe(5000);
    store.close();
  });
});
