// What must never happen in secure jobs (seed 003), checked through the running service: a
// session without proof of possession, a DEK released twice for one OTK (surfaced to the
// caller as a security event), a job reading another tenant's data, a runaway module taking
// down the host, and tampered ciphertext opening inside the job VM.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encryptBytes } from "../../sdk/src/envelope/envelope-bytes.js";
import { readEnvelopeHeader } from "../../sdk/src/envelope/read-envelope-header.js";
import type { SecurityEvent } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { encryptToStorage } from "../../sdk/src/job/encrypt-to-storage.js";
import { runJob } from "../../sdk/src/job/run-job.js";
import { buildJobModule, compileWat } from "../../scripts/build-wasm-jobs.js";
import { startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;
let bob: JobUser;
let byteSum: Uint8Array;

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
  bob = await t.user("bob");
  byteSum = await buildJobModule("byte-sum");
}, 30_000);
afterAll(async () => t?.stop());

describe("sessions need proof of possession (the handshake itself: job-session-channel.test.ts)", () => {
  it("refuses jobs on a session id that was never established, or that belongs to someone else", async () => {
    const aliceSession = await alice.session();
    const bobSession = await bob.session();
    const inline = await encryptBytes(Buffer.from("x"), { dek: bob.dek, dekId: bob.dekId });
    const submit = (sessionId: string) =>
      bobSession.jobs.submitJob({ requestId: `r-${sessionId}-${Math.random()}`, sessionId, code: byteSum, codeSha256: createHash("sha256").update(byteSum).digest(), otk: new Uint8Array(32), inlineCiphertext: inline, dekId: bob.dekId });
    await expect(submit("ses_made_up")).rejects.toMatchObject({ reason: "SESSION_UNKNOWN" });
    await expect(submit(aliceSession.id)).rejects.toMatchObject({ reason: "SESSION_NOT_YOURS" });
  }, 30_000);
});

describe("one-time job keys", () => {
  it("a second job presenting a used OTK is refused by the key holder, fails, and surfaces a security event", async () => {
    const session = await alice.session();
    const inline = await encryptBytes(Buffer.from([1, 2, 3, 250]), { dek: alice.dek, dekId: alice.dekId });
    const otk = await alice.keyHolder.issueOtk({ codeSha256: createHash("sha256").update(byteSum).digest(), dekId: alice.dekId, data: { inline: true } });
    const first = await runJob(session, byteSum, { inline, dekId: alice.dekId }, { otk, resultMode: "returned" });
    expect(Buffer.from(first.output).readBigUInt64LE(0)).toBe(256n);
    const events: SecurityEvent[] = [];
    session.on("securityEvent", (e: SecurityEvent) => events.push(e));
    await expect(runJob(session, byteSum, { inline, dekId: alice.dekId }, { otk, resultMode: "returned" })).rejects.toMatchObject({ reason: "JOB_SECURITY_EVENT" });
    expect(events.map((e) => e.reason)).toEqual(["OTK_REUSED"]);
  }, 60_000);
});

describe("a job reads only its own data", () => {
  it("refuses a job (and a download) naming another tenant's object", async () => {
    const aliceSession = await alice.session();
    await encryptToStorage(aliceSession.storage, [Buffer.from("alice's secret numbers")], { dek: alice.dek, dekId: alice.dekId, tenant: "alice", name: "private.txt" });
    const bobSession = await bob.session();
    await expect(runJob(bobSession, byteSum, { stored: { tenant: "alice", name: "private.txt" }, dekId: bob.dekId })).rejects.toMatchObject({ status: "PERMISSION_DENIED", reason: "TENANT_FORBIDDEN" });
    const download = async () => {
      for await (const _ of bobSession.storage.getObject({ tenant: "alice", name: "private.txt" })) void _;
    };
    await expect(download()).rejects.toMatchObject({ reason: "TENANT_FORBIDDEN" });
    await expect(encryptToStorage(bobSession.storage, [Buffer.from("x")], { dek: bob.dek, dekId: bob.dekId, tenant: "alice", name: "planted.txt" })).rejects.toMatchObject({ reason: "TENANT_FORBIDDEN" });
  }, 60_000);
});

describe("runaway modules are killed; the host stays up", () => {
  const inlineFor = (u: JobUser) => encryptBytes(Buffer.from("some input"), { dek: u.dek, dekId: u.dekId });

  it("a module that loops forever fails with WALL_CLOCK_EXCEEDED", async () => {
    const loop = await compileWat(`(module (import "env" "memory" (memory 1))
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "feed") (param i32 i32) (loop $l (br $l)))
      (func (export "finish") (result i64) (i64.const 0)))`);
    const session = await alice.session();
    const started = Date.now();
    await expect(runJob(session, loop, { inline: await inlineFor(alice), dekId: alice.dekId }, { limits: { wallClockMs: 1500 } })).rejects.toMatchObject({ reason: "WALL_CLOCK_EXCEEDED" });
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 30_000);

  it("a module that allocates without bound fails with MEMORY_LIMIT_EXCEEDED, and the next job runs", async () => {
    const hog = await compileWat(`(module (import "env" "memory" (memory 1))
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "feed") (param i32 i32)
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable)
      (func (export "finish") (result i64) (i64.const 0)))`);
    const session = await alice.session();
    await expect(runJob(session, hog, { inline: await inlineFor(alice), dekId: alice.dekId }, { limits: { memoryBytes: 32 * 1024 * 1024 } })).rejects.toMatchObject({ reason: "MEMORY_LIMIT_EXCEEDED" });
    const ok = await runJob(session, byteSum, { inline: await inlineFor(alice), dekId: alice.dekId }, { resultMode: "returned" });
    expect(Buffer.from(ok.output).readBigUInt64LE(0)).toBe(BigInt([...Buffer.from("some input")].reduce((a, b) => a + b, 0)));
  }, 30_000);
});

describe("tampered ciphertext does not open in the job VM", () => {
  it("truncated, reordered and spliced segments fail the job", async () => {
    const seg = 64;
    const plain = Buffer.alloc(seg * 4, 7);
    const env = Buffer.from(await encryptBytes(plain, { dek: alice.dek, dekId: alice.dekId }, { segmentSize: seg }));
    const other = Buffer.from(await encryptBytes(Buffer.alloc(seg * 4, 9), { dek: alice.dek, dekId: alice.dekId }, { segmentSize: seg }));
    const h = readEnvelopeHeader(env).headerLength;
    const c = seg + 16;
    const segs = (b: Buffer) => [0, 1, 2, 3].map((i) => b.subarray(h + i * c, h + (i + 1) * c));
    const [s0, s1, s2, s3] = segs(env);
    const variants: Record<string, Buffer> = {
      truncated: env.subarray(0, h + 3 * c),
      reordered: Buffer.concat([env.subarray(0, h), s1!, s0!, s2!, s3!]),
      spliced: Buffer.concat([env.subarray(0, h), s0!, segs(other)[1]!, s2!, s3!]),
    };
    const session = await alice.session();
    for (const [name, inline] of Object.entries(variants)) {
      const err = await runJob(session, byteSum, { inline, dekId: alice.dekId }, { resultMode: "returned" }).then(
        () => undefined,
        (e: { reason: string }) => e,
      );
      expect(err?.reason, name).toMatch(/^ENVELOPE_(TRUNCATED|TAMPERED)$/);
    }
    // The untampered envelope runs (so the failures above are the tampering).
    const ok = await runJob(session, byteSum, { inline: env, dekId: alice.dekId }, { resultMode: "returned" });
    expect(Buffer.from(ok.output).readBigUInt64LE(0)).toBe(BigInt(seg * 4 * 7));
  }, 60_000);
});

describe("the job VM's data gate", () => {
  it("serves a job VM only its own job's input", async () => {
    const { isOwnInput } = await import("../../server/src/job/job-manager.js");
    const stored = { data: { tenant: "alice", name: "a.csv", digest: "", size: 0 } };
    expect(isOwnInput(stored, { tenant: "alice", name: "a.csv" })).toBe(true);
    expect(isOwnInput(stored, { tenant: "bob", name: "a.csv" })).toBe(false);
    expect(isOwnInput(stored, { tenant: "alice", name: "b.csv" })).toBe(false);
    expect(isOwnInput(stored, { inline: true })).toBe(false);
    expect(isOwnInput({ data: undefined }, { inline: true })).toBe(true);
    expect(isOwnInput({ data: undefined }, { tenant: "alice", name: "a.csv" })).toBe(false);
  });
});

describe("two jobs racing with one OTK", () => {
  it("exactly one gets the key; the other fails with a security event", async () => {
    const session = await alice.session();
    const inline = await encryptBytes(Buffer.from([5, 5]), { dek: alice.dek, dekId: alice.dekId });
    const otk = await alice.keyHolder.issueOtk({ codeSha256: createHash("sha256").update(byteSum).digest(), dekId: alice.dekId, data: { inline: true } });
    const outcomes = await Promise.allSettled([0, 1].map(() => runJob(session, byteSum, { inline, dekId: alice.dekId }, { otk, resultMode: "returned" })));
    expect(outcomes.filter((o) => o.status === "fulfilled").length).toBe(1);
    const rejected = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ reason: "JOB_SECURITY_EVENT" });
  }, 60_000);
});
