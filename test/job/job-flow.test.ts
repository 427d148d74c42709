// End to end (seed 003): encrypt + upload, a proof-of-possession session, a WebAssembly job in
// a job VM that receives the DEK sealed to its ephemeral key, and the opened result — stored
// and returned variants, inline data, and the "never on the server" scan of disk, DB and logs.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encryptToStorage } from "../../sdk/src/job/encrypt-to-storage.js";
import { encryptBytes } from "../../sdk/src/envelope/envelope-bytes.js";
import { runJob } from "../../sdk/src/job/run-job.js";
import { buildJobModule } from "../../scripts/build-wasm-jobs.js";
import { filesUnder, startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;
const MARKER = "PLAINTEXT-MARKER-7f3a9c";

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
}, 30_000);
afterAll(async () => t?.stop());


describe("secure job flow", () => {
  it("runs word frequency over stored ciphertext and stores the encrypted result; no DEK or plaintext reaches the server", async () => {
    const text = `${MARKER} the quick brown fox jumps over the lazy dog. The dog sleeps; THE END\n`.repeat(50);
    const session = await alice.session("sign");
    const ref = await encryptToStorage(session.storage, [Buffer.from(text)], { dek: alice.dek, dekId: alice.dekId, tenant: "alice", name: "texts/fox.txt", size: text.length });
    expect(ref.size).toBeGreaterThan(text.length);
    const code = await buildJobModule("word-frequency");
    const states: string[] = [];
    const { job, output } = await runJob(session, code, { stored: { tenant: "alice", name: "texts/fox.txt" }, dekId: alice.dekId }, { onProgress: (p) => "state" in p && states.push(p.state) });
    const counts = new Map(Buffer.from(output).toString("utf8").trim().split("\n").map((l) => [l.split("\t")[0]!, Number(l.split("\t")[1])]));
    expect(counts.get("the")).toBe(200);
    expect(counts.get("dog")).toBe(100);
    expect(counts.get("end")).toBe(50);
    expect(job.result?.name).toMatch(/^results\//);
    expect(states).toContain("JOB_STATE_AWAITING_KEY");
    expect(states.at(-1)).toBe("JOB_STATE_SUCCEEDED");

    // Nothing secret on the server side: data dir (DB + blobs + keys) and captured logs.
    const dek = Buffer.from(alice.dek);
    const needles = [dek, Buffer.from(dek.toString("hex")), Buffer.from(dek.toString("base64")), Buffer.from(dek.toString("base64url")), Buffer.from(MARKER), Buffer.from("quick brown fox")];
    const haystacks = filesUnder(t.env.config.dataDir).map((f) => ({ f, bytes: readFileSync(f) }));
    haystacks.push({ f: "logs", bytes: Buffer.from(t.env.logs()) });
    expect(haystacks.length).toBeGreaterThan(3);
    for (const { f, bytes } of haystacks) for (const n of needles) expect(bytes.includes(n), `${f} holds a secret`).toBe(false);
    // The logs did see the job (so the scan looked at real output).
    expect(t.env.logs()).toContain(job.jobId);
  }, 60_000);

  it("runs a CSV aggregate on inline ciphertext with the result returned over the session (encrypt-variant session)", async () => {
    const session = await alice.session("encrypt");
    const csv = "city,temp,rain\nOslo,-3.5,12\nRome,14.25,3\nLima,19,0\nnowhere,n/a,7\n";
    const inline = await encryptBytes(Buffer.from(csv), { dek: alice.dek, dekId: alice.dekId });
    const code = await buildJobModule("csv-aggregate");
    const { job, output } = await runJob(session, code, { inline, dekId: alice.dekId }, { resultMode: "returned" });
    expect(job.result).toBeUndefined();
    const b = Buffer.from(output);
    const ncols = b.readUInt32LE(0);
    expect(ncols).toBe(3);
    const col = (i: number) => [0, 1, 2, 3].map((k) => b.readDoubleLE(4 + i * 32 + k * 8));
    expect(col(0)).toEqual([0, 0, 0, 0]);
    expect(col(1)).toEqual([3, 29.75, -3.5, 19]);
    expect(col(2)).toEqual([4, 22, 0, 12]);
  }, 60_000);

  it("streams a large input straight to the job VM (past the inline cap), storing nothing", async () => {
    const session = await alice.session("sign");
    // 8 MiB of plaintext: more than SubmitJob's 3 MiB inline cap.
    const plain = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < plain.length; i++) plain[i] = (i * 31) & 0xff;
    const want = plain.reduce((a, b) => a + BigInt(b), 0n);
    const blobsBefore = filesUnder(path.join(t.env.config.dataDir, "blobs")).length;
    const uploaded: number[] = [];
    const { job, output } = await runJob(session, await buildJobModule("byte-sum"), { streamed: { plaintext: [plain], size: plain.length }, dekId: alice.dekId }, {
      resultMode: "returned",
      onProgress: (p) => "phase" in p && p.phase === "upload" && uploaded.push(p.bytes),
    });
    expect(Buffer.from(output).readBigUInt64LE(0)).toBe(want);
    expect(job.data).toBeUndefined();
    expect(uploaded.at(-1)).toBeGreaterThan(plain.length);
    // Relayed, never stored: no blob appeared.
    expect(filesUnder(path.join(t.env.config.dataDir, "blobs")).length).toBe(blobsBefore);
  }, 60_000);
});
