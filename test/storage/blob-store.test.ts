// The filesystem blob store: content addressing, streaming without buffering, atomic writes
// that leave nothing behind on failure, digest checks and path-traversal refusal.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FsBlobStore } from "../../server/src/runtime/storage/blob-store.js";

const root = mkdtempSync(path.join(os.tmpdir(), "tp-blobs-"));
const store = new FsBlobStore(root);
afterAll(() => rmSync(root, { recursive: true, force: true }));

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

describe("FsBlobStore", () => {
  it("stores by SHA-256 and reads back the same bytes", async () => {
    const data = randomBytes(1000);
    const info = await store.put(data);
    expect(info).toEqual({ digest: createHash("sha256").update(data).digest("hex"), size: 1000 });
    expect(await readAll(store.get(info.digest))).toEqual(data);
    expect(await store.has(info.digest)).toBe(true);
    expect(await store.delete(info.digest)).toBe(true);
    expect(await store.has(info.digest)).toBe(false);
  });

  it("streams 32 MiB in chunks without holding it whole", async () => {
    const hash = createHash("sha256");
    async function* gen() {
      for (let i = 0; i < 512; i++) {
        const c = randomBytes(64 * 1024);
        hash.update(c);
        yield c;
      }
    }
    const before = process.memoryUsage().rss;
    const info = await store.put(gen());
    expect(info.size).toBe(32 * 1024 * 1024);
    expect(info.digest).toBe(hash.digest("hex"));
    expect(process.memoryUsage().rss - before).toBeLessThan(32 * 1024 * 1024);
  });

  it("leaves no file when the source fails midway", async () => {
    async function* failing() {
      yield randomBytes(4096);
      throw new Error("client went away");
    }
    await expect(store.put(failing())).rejects.toThrow("client went away");
    expect(tmpFiles()).toEqual([]);
  });

  it("refuses content that does not match the expected digest, and keeps nothing", async () => {
    const data = randomBytes(100);
    const wrong = "0".repeat(64);
    await expect(store.put(data, { expectedDigest: wrong })).rejects.toMatchObject({ reason: "DIGEST_MISMATCH" });
    expect(await store.has(createHash("sha256").update(data).digest("hex"))).toBe(false);
    expect(tmpFiles()).toEqual([]);
  });

  it("enforces a size limit while streaming", async () => {
    await expect(store.put(randomBytes(2048), { maxBytes: 1024 })).rejects.toMatchObject({ reason: "BLOB_TOO_LARGE" });
    expect(tmpFiles()).toEqual([]);
  });

  it.each(["../../etc/passwd", "ABCDEF".repeat(11).slice(0, 64), "abc", `${"a".repeat(63)}/`])("refuses digest %j", async (digest) => {
    expect(() => store.get(digest)).toThrow(/64 lowercase hex/);
    await expect(store.has(digest)).rejects.toMatchObject({ reason: "BLOB_DIGEST_INVALID" });
  });

  it("reports a missing blob as NOT_FOUND", async () => {
    await expect(readAll(store.get("f".repeat(64)))).rejects.toMatchObject({ status: "NOT_FOUND" });
  });
});
