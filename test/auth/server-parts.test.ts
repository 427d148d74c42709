// Unit tests of the server-side auth parts: stream digest framing, the rule policy engine,
// the in-memory nonce store and area naming for UNIMPLEMENTED.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { StreamDigest, streamDigest } from "../../sdk/src/auth/stream-digest.js";
import { CallStatement } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import type { Caller } from "../../server/src/runtime/auth/caller.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { RulePolicyEngine, type PrincipalPolicy } from "../../server/src/runtime/auth/policy-engine.js";
import { areaOf } from "../../server/src/runtime/auth/service-binder.js";

describe("stream digest", () => {
  it("is SHA-256 over 8-byte big-endian length-prefixed messages", () => {
    const a = Buffer.from("ab");
    const expected = createHash("sha256").update(Buffer.from([0, 0, 0, 0, 0, 0, 0, 2])).update(a).digest();
    expect(Buffer.from(streamDigest([a])).equals(expected)).toBe(true);
    expect(Buffer.from(streamDigest([])).equals(createHash("sha256").digest())).toBe(true);
  });
  it("binds message boundaries and matches the incremental form", () => {
    const d1 = streamDigest([Buffer.from("ab"), Buffer.from("c")]);
    const d2 = streamDigest([Buffer.from("a"), Buffer.from("bc")]);
    expect(Buffer.from(d1).equals(d2)).toBe(false);
    const inc = new StreamDigest().update(Buffer.from("ab")).update(Buffer.from("c")).digest();
    expect(Buffer.from(inc).equals(d1)).toBe(true);
  });
});

describe("RulePolicyEngine", () => {
  const policies: Record<string, PrincipalPolicy> = {
    ops: { roles: [], rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: "allow" }, { methods: ["/trustplane.vm.v1.VmService/DeleteVm"], effect: "deny" }] },
    root: { roles: ["admin"], rules: [{ methods: ["/trustplane.job.v1.JobService/*"], effect: "deny" }] },
    none: { roles: [], rules: [] },
  };
  const engine = new RulePolicyEngine(async (p) => policies[p]);
  const caller = (principal: string): Caller => ({ principal, keyId: "k", roles: [], statement: CallStatement.fromPartial({}) });

  it("allows by glob, DENY beats ALLOW, default deny", async () => {
    expect(await engine.authorize(caller("ops"), "/trustplane.vm.v1.VmService/CreateVm")).toBe(true);
    expect(await engine.authorize(caller("ops"), "/trustplane.vm.v1.VmService/DeleteVm")).toBe(false);
    expect(await engine.authorize(caller("ops"), "/trustplane.vm.v1.VmServiceX/CreateVm")).toBe(false);
    expect(await engine.authorize(caller("ops"), "/trustplane.auth.v1.AuthService/Echo")).toBe(false);
    expect(await engine.authorize(caller("none"), "/trustplane.auth.v1.AuthService/Echo")).toBe(false);
    expect(await engine.authorize(caller("ghost"), "/trustplane.auth.v1.AuthService/Echo")).toBe(false);
  });
  it("admin allows everything no DENY names", async () => {
    expect(await engine.authorize(caller("root"), "/trustplane.auth.v1.AuthService/SetPolicy")).toBe(true);
    expect(await engine.authorize(caller("root"), "/trustplane.job.v1.JobService/RunJob")).toBe(false);
  });
});

describe("MemoryNonceStore", () => {
  it("refuses a nonce until it expires", async () => {
    let now = 1000;
    const store = new MemoryNonceStore({ now: () => now });
    const n = Buffer.alloc(16, 1);
    expect(await store.remember(n, 5000)).toBe(true);
    expect(await store.remember(n, 5000)).toBe(false);
    now = 5001;
    expect(await store.remember(n, 9000)).toBe(true);
  });
  it("is bounded: sweeps expired entries and refuses (never forgets early) when full", async () => {
    let now = 0;
    const store = new MemoryNonceStore({ maxEntries: 2, now: () => now });
    expect(await store.remember(Buffer.from([1]), 100_000)).toBe(true);
    expect(await store.remember(Buffer.from([2]), 100_000)).toBe(true);
    await expect(store.remember(Buffer.from([3]), 100_000)).rejects.toMatchObject({ status: "RESOURCE_EXHAUSTED", reason: "NONCE_STORE_FULL" });
    // A full store still recognises a replay as a replay, up to the last millisecond.
    now = 99_999;
    expect(await store.remember(Buffer.from([1]), 200_000)).toBe(false);
    now = 100_001;
    expect(await store.remember(Buffer.from([3]), 200_000)).toBe(true);
    expect(store.size).toBe(1);
  });
});

describe("MemoryNonceStore across a restart", () => {
  it("hands every unexpired nonce to the next process through a snapshot", async () => {
    let now = 1_000_000;
    const before = new MemoryNonceStore({ now: () => now });
    expect(await before.remember(Buffer.alloc(16, 1), 1_300_000)).toBe(true);
    expect(await before.remember(Buffer.alloc(16, 2), 1_000_500)).toBe(true);
    const snap = before.snapshot();
    now = 1_001_000;
    const after = new MemoryNonceStore({ now: () => now });
    after.restore(snap);
    expect(await after.remember(Buffer.alloc(16, 1), 1_300_000)).toBe(false);
    // Expired by the time of the restart: not carried over, and acceptable again.
    expect(await after.remember(Buffer.alloc(16, 2), 1_300_000)).toBe(true);
    expect(() => after.restore(Buffer.from("garbage-garbage-garbage"))).toThrow(expect.objectContaining({ reason: "NONCE_SNAPSHOT_INVALID" }));
    expect(() => after.restore(Buffer.concat([snap, Buffer.from([16, 1, 2])]))).toThrow(expect.objectContaining({ reason: "NONCE_SNAPSHOT_INVALID" }));
  });
});

describe("areaOf", () => {
  it("names the proto package's area", () => {
    expect(areaOf("/trustplane.vm.v1.VmService/CreateVm")).toBe("vm");
    expect(areaOf("/trustplane.auth.v1.AuthService/Echo")).toBe("auth");
  });
});

describe("newNonce", () => {
  it("gives distinct 16-byte nonces across pool refills", async () => {
    const { newNonce } = await import("../../sdk/src/auth/call-statement.js");
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const n = newNonce();
      expect(n.length).toBe(16);
      seen.add(Buffer.from(n).toString("hex"));
    }
    expect(seen.size).toBe(1000);
  });
});
