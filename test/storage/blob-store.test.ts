// The filesystem blob store: content addressing, streaming without buffering, atomic writes
// that leave nothing behind on failure or abort, digest checks and path-traversal refusal.
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { FsBlobStore } from "../../server/src/runtime/storage/blob-store.js";

const root = mkdtempSync(path.join(os.tmpdir(), "tp-blobs-"));
const store = new FsBlobStore(root);
afterAll(() => rmSync(root, { recursive: true, force: true }));

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function tmpFiles(): string[] {
  try {
    return readdirSync(path.join(root, "tmp"));
  } catch {
    return [];
  }
}

/** Every regular file under root except the temp directory (blobs actually stored). */
function storedFiles(dir = root): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (dir === root && e.name === "tmp") continue;
      out.push(...storedFiles(path.join(dir, e.name)));
    } else out.push(path.join(dir, e.name));
  }
  return out;
}

/** Bytes in the store's temp files right now (uploads in progress). */
function tmpBytesOnDisk(): number {
  const dir = path.join(root, "tmp");
  let total = 0;
  try {
    for (const name of readdirSync(dir)) total += statSync(path.join(dir, name)).size;
  } catch {
    return 0;
  }
  return total;
}

describe("FsBlobStore", () => {
  it("stores by SHA-256 under root/ab/cd/<hex>, owner-only, and reads back the same bytes", async () => {
    const data = randomBytes(1000);
    const info = await store.put(data);
    const digest = sha256(data);
    expect(info).toEqual({ digest, size: 1000 });
    const file = path.join(root, digest.slice(0, 2), digest.slice(2, 4), digest);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await readAll(store.get(info.digest))).toEqual(data);
    expect(await store.stat(info.digest)).toEqual({ digest, size: 1000 });
    expect(await store.has(info.digest)).toBe(true);
    expect(await store.delete(info.digest)).toBe(true);
    expect(await store.delete(info.digest)).toBe(false);
    expect(await store.has(info.digest)).toBe(false);
    expect(await store.stat(info.digest)).toBeUndefined();
  });

  it("accepts a Uint8Array view, a Node Readable, an old-style stream and an empty blob", async () => {
    const backing = randomBytes(300);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 100, 100);
    expect((await store.put(view)).digest).toBe(sha256(backing.subarray(100, 200)));
    const parts = [randomBytes(10), randomBytes(20)];
    expect((await store.put(Readable.from(parts))).digest).toBe(sha256(Buffer.concat(parts)));
    // A pre-streams2 emitter: only data/end events and pause/resume, no async iterator.
    const old = Object.assign(new EventEmitter(), { pause() {}, resume() {} });
    setImmediate(() => {
      old.emit("data", Buffer.from("old-"));
      old.emit("data", Buffer.from("style"));
      old.emit("end");
    });
    expect((await store.put(old as unknown as NodeJS.ReadableStream)).digest).toBe(sha256(Buffer.from("old-style")));
    expect(await store.put(new Uint8Array(0))).toEqual({ digest: sha256(new Uint8Array(0)), size: 0 });
  });

  it("streams 32 MiB in and out in bounded chunks without holding it whole", async () => {
    const hash = createHash("sha256");
    let onDiskMidway = 0;
    async function* gen() {
      for (let i = 0; i < 512; i++) {
        // 24 MiB in, the bytes must already be on disk: the store streams, it does not buffer.
        if (i === 384) onDiskMidway = tmpBytesOnDisk();
        const c = randomBytes(64 * 1024);
        hash.update(c);
        yield c;
      }
    }
    const info = await store.put(gen());
    expect(info.size).toBe(32 * 1024 * 1024);
    expect(info.digest).toBe(hash.digest("hex"));
    expect(onDiskMidway).toBeGreaterThan(16 * 1024 * 1024);
    const back = createHash("sha256");
    let chunks = 0;
    let largest = 0;
    for await (const c of store.get(info.digest)) {
      back.update(c as Buffer);
      chunks++;
      largest = Math.max(largest, (c as Buffer).length);
    }
    expect(back.digest("hex")).toBe(info.digest);
    expect(chunks).toBeGreaterThan(32);
    expect(largest).toBeLessThanOrEqual(1024 * 1024);
    await store.delete(info.digest);
  });

  it("leaves no file when the source fails midway", async () => {
    const before = storedFiles();
    async function* failing() {
      yield randomBytes(300 * 1024); // past one write batch: bytes did reach the temp file
      yield randomBytes(4096);
      throw new Error("client went away");
    }
    await expect(store.put(failing())).rejects.toThrow("client went away");
    expect(tmpFiles()).toEqual([]);
    expect(storedFiles()).toEqual(before);
  });

  it("stops and cleans up when the upload is aborted while the source is stalled", async () => {
    const before = storedFiles();
    const ac = new AbortController();
    const source = new PassThrough();
    source.write(randomBytes(400 * 1024));
    const put = store.put(source, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 50));
    expect(tmpFiles()).toHaveLength(1); // the write was really in progress
    ac.abort();
    await expect(put).rejects.toMatchObject({ status: "CANCELLED", reason: "BLOB_WRITE_CANCELLED" });
    expect(tmpFiles()).toEqual([]);
    expect(storedFiles()).toEqual(before);
    expect(source.destroyed).toBe(true);
  });

  it("refuses content that does not match the expected digest, and keeps nothing", async () => {
    const data = randomBytes(100);
    const wrong = "0".repeat(64);
    await expect(store.put(data, { expectedDigest: wrong })).rejects.toMatchObject({ status: "DATA_LOSS", reason: "DIGEST_MISMATCH" });
    expect(await store.has(sha256(data))).toBe(false);
    expect(await store.has(wrong)).toBe(false);
    expect(tmpFiles()).toEqual([]);
    expect((await store.put(data, { expectedDigest: sha256(data) })).digest).toBe(sha256(data));
  });

  it("enforces a size limit while streaming", async () => {
    await expect(store.put(randomBytes(2048), { maxBytes: 1024 })).rejects.toMatchObject({ reason: "BLOB_TOO_LARGE" });
    expect(tmpFiles()).toEqual([]);
  });

  it("stores the same content twice concurrently as one blob", async () => {
    const data = randomBytes(200_000);
    const [a, b] = await Promise.all([store.put(data), store.put(data)]);
    expect(a).toEqual(b);
    expect(await readAll(store.get(a.digest))).toEqual(data);
    expect(tmpFiles()).toEqual([]);
  });

  const hostile = ["../../etc/passwd", "ab/../../../../etc/passwd", "ABCDEF".repeat(11).slice(0, 64), "abc", `${"a".repeat(63)}/`, `${"a".repeat(64)}\n`, `../${"a".repeat(61)}`, ""];
  it.each(hostile)("refuses digest %j everywhere, before touching the filesystem", async (digest) => {
    expect(() => store.get(digest)).toThrow(/64 lowercase hex/);
    await expect(store.has(digest)).rejects.toMatchObject({ status: "INVALID_ARGUMENT", reason: "BLOB_DIGEST_INVALID" });
    await expect(store.stat(digest)).rejects.toMatchObject({ reason: "BLOB_DIGEST_INVALID" });
    await expect(store.delete(digest)).rejects.toMatchObject({ reason: "BLOB_DIGEST_INVALID" });
    await expect(store.put(Buffer.from("x"), { expectedDigest: digest })).rejects.toMatchObject({ reason: "BLOB_DIGEST_INVALID" });
  });

  it("cannot be made to delete a file outside its root", async () => {
    const outside = path.join(root, "..", `tp-victim-${randomBytes(4).toString("hex")}`);
    writeFileSync(outside, "keep me");
    try {
      await expect(store.delete(`../${path.basename(outside)}`)).rejects.toMatchObject({ reason: "BLOB_DIGEST_INVALID" });
      expect(existsSync(outside)).toBe(true);
    } finally {
      rmSync(outside, { force: true });
    }
  });

  it("reports a missing blob as NOT_FOUND", async () => {
    await expect(readAll(store.get("f".repeat(64)))).rejects.toMatchObject({ status: "NOT_FOUND", reason: "BLOB_NOT_FOUND" });
  });

  it("sweeps temp files left by a crashed writer, but not fresh ones", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-blobs-sweep-"));
    try {
      const s = new FsBlobStore(dir);
      mkdirSync(path.join(dir, "tmp"));
      writeFileSync(path.join(dir, "tmp", "old.part"), "x");
      writeFileSync(path.join(dir, "tmp", "fresh.part"), "x");
      const hourAgo = new Date(Date.now() - 2 * 3600_000);
      utimesSync(path.join(dir, "tmp", "old.part"), hourAgo, hourAgo);
      expect(await s.removeStaleTemp()).toBe(1);
      expect(readdirSync(path.join(dir, "tmp"))).toEqual(["fresh.part"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
