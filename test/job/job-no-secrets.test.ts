// "DEK or plaintext on the server's disk, database or logs" must never happen (seed 003) — not
// after a stored job only, but after returned, failed, tampered and streamed jobs too, and not
// in the OS temp dir or the agent's VM directories either (job VMs are gone after their job).
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encryptBytes } from "../../sdk/src/envelope/envelope-bytes.js";
import { readEnvelopeHeader } from "../../sdk/src/envelope/read-envelope-header.js";
import { encryptToStorage } from "../../sdk/src/job/encrypt-to-storage.js";
import { runJob } from "../../sdk/src/job/run-job.js";
import { buildJobModule, compileWat } from "../../scripts/build-wasm-jobs.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { filesUnder, startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;
const started = Date.now();
const MARKER = `SECRET-PLAINTEXT-${randomBytes(8).toString("hex")}`;

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
}, 30_000);
afterAll(async () => t?.stop());

describe("no DEK or plaintext anywhere on the service side", () => {
  it("after returned, failed, tampered and streamed jobs: data dir (DB, blobs, agent + VM dirs), logs and temp files", async () => {
    const session = await alice.session();
    const text = `${MARKER} ${"lorem ipsum dolor ".repeat(100)}`;
    const byteSum = await buildJobModule("byte-sum");
    const env = (s: string, segmentSize?: number) => encryptBytes(Buffer.from(s), { dek: alice.dek, dekId: alice.dekId }, segmentSize ? { segmentSize } : {});

    // Returned mode.
    await runJob(session, await buildJobModule("word-frequency"), { inline: await env(text), dekId: alice.dekId }, { resultMode: "returned" });
    // Stored input, stored result.
    await encryptToStorage(session.storage, [Buffer.from(text)], { dek: alice.dek, dekId: alice.dekId, tenant: "alice", name: "scan/in.txt" });
    await runJob(session, await buildJobModule("word-frequency"), { stored: { tenant: "alice", name: "scan/in.txt" }, dekId: alice.dekId });
    // A failed job (trap after seeing the plaintext).
    const trap = await compileWat(`(module (import "env" "memory" (memory 1))
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "feed") (param i32 i32) unreachable)
      (func (export "finish") (result i64) (i64.const 0)))`);
    await expect(runJob(session, trap, { inline: await env(text), dekId: alice.dekId })).rejects.toMatchObject({ reason: "MODULE_TRAPPED" });
    // A tampered envelope (second segment's tag flipped).
    const tampered = Buffer.from(await env(text, 256));
    const h = readEnvelopeHeader(tampered).headerLength;
    tampered[h + 256 + 16 + 5]! ^= 1;
    await expect(runJob(session, byteSum, { inline: tampered, dekId: alice.dekId }, { resultMode: "returned" })).rejects.toMatchObject({ reason: expect.stringMatching(/^ENVELOPE_/) });
    // Streamed straight to the VM.
    await runJob(session, byteSum, { streamed: { plaintext: [Buffer.from(text)] }, dekId: alice.dekId }, { resultMode: "returned" });

    // Every job VM is gone: nothing left in the agent's VM directory.
    const vmsDir = path.join(t.env.config.dataDir, "agent", DEV_HOST_ID, "vms");
    for (let i = 0; i < 100 && readdirSync(vmsDir).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(readdirSync(vmsDir)).toEqual([]);

    const dek = Buffer.from(alice.dek);
    const needles = [dek, Buffer.from(dek.toString("hex")), Buffer.from(dek.toString("base64")), Buffer.from(dek.toString("base64url")), Buffer.from(MARKER), Buffer.from("lorem ipsum dolor lorem")];
    const serverFiles = filesUnder(t.env.config.dataDir);
    // Temp files written while this test ran (other processes' files do not hold our marker).
    const tempFiles = filesUnder(os.tmpdir(), (f, size, mtime) => mtime >= started && size < 64 * 1024 * 1024 && !f.startsWith(t.env.config.dataDir));
    expect(serverFiles.length).toBeGreaterThan(3);
    const haystacks = [...serverFiles, ...tempFiles].map((f) => {
      try {
        return { f, bytes: readFileSync(f) };
      } catch {
        return { f, bytes: Buffer.alloc(0) };
      }
    });
    haystacks.push({ f: "logs", bytes: Buffer.from(t.env.logs()) });
    for (const { f, bytes } of haystacks) for (const n of needles) expect(bytes.includes(n), `${f} holds a secret`).toBe(false);
    // Not even the DEK sealed to a job VM's key is kept (no idempotent-replay row for it).
    for (const f of serverFiles) expect(readFileSync(f).includes(Buffer.from("JobVmService/RequestDataKey")), `${f} keeps a key release`).toBe(false);
    // The scan saw real activity: the logs name the jobs' VMs.
    expect(t.env.logs()).toContain("job VM reported its result");
  }, 120_000);
});
