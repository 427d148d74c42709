// Hosted storage (seed 003): streamed, tenant-scoped objects over the blob store. The declared
// size is enforced, names are never silently replaced, deletes remove the bytes, and what is
// stored is exactly the client's envelope ciphertext (read back byte for byte).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { StorageServiceService } from "../../sdk/src/gen/trustplane/job/v1/storage.js";
import { startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let carol: JobUser;

beforeAll(async () => {
  t = await startJobTestEnv();
  carol = await t.user("carol");
}, 30_000);
afterAll(async () => t?.stop());

describe("StorageService", () => {
  it("stores, stats, streams back and deletes an object; refuses a wrong declared size and an existing name", async () => {
    const storage = createClient(StorageServiceService, t.address, { key: carol.key });
    try {
      const bytes = Buffer.alloc(3 * 1024 * 1024 + 17);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 13) & 0xff;
      const chunks = [bytes.subarray(0, 1024 * 1024), bytes.subarray(1024 * 1024)];
      const put = (name: string, size: number) => storage.putObject([{ header: { requestId: `put-${name}-${size}-${Math.random()}`, tenant: "carol", name, size } }, ...chunks.map((chunk) => ({ chunk }))]);
      await expect(put("a.bin", bytes.length - 1)).rejects.toMatchObject({ reason: "BLOB_TOO_LARGE" });
      await expect(put("a.bin", bytes.length + 1)).rejects.toMatchObject({ reason: "OBJECT_SIZE_MISMATCH" });
      const ref = (await put("a.bin", bytes.length)).object!;
      expect(ref.size).toBe(bytes.length);
      await expect(put("a.bin", bytes.length)).rejects.toMatchObject({ status: "ALREADY_EXISTS" });
      expect((await storage.statObject({ tenant: "carol", name: "a.bin" })).object?.digest).toBe(ref.digest);
      const got: Buffer[] = [];
      for await (const m of storage.getObject({ tenant: "carol", name: "a.bin" })) if (m.chunk) got.push(Buffer.from(m.chunk));
      expect(Buffer.concat(got).equals(bytes)).toBe(true);
      await storage.deleteObject({ requestId: `del-${Math.random()}`, tenant: "carol", name: "a.bin" });
      await expect(storage.statObject({ tenant: "carol", name: "a.bin" })).rejects.toMatchObject({ reason: "OBJECT_NOT_FOUND" });
      const named = (await storage.putObject([{ header: { requestId: `put-anon-${Math.random()}`, tenant: "carol", name: "", size: 1 } }, { chunk: Buffer.from([1]) }])).object!;
      expect(named.name).toMatch(/^obj_/);
    } finally {
      storage.close();
    }
  }, 30_000);

  it("encryptToStorage with a known size encrypts once and refuses a source that is not that size", async () => {
    const { encryptToStorage } = await import("../../sdk/src/job/encrypt-to-storage.js");
    const { decryptBytes } = await import("../../sdk/src/envelope/envelope-bytes.js");
    const storage = createClient(StorageServiceService, t.address, { key: carol.key });
    try {
      const plain = Buffer.alloc(2 * 1024 * 1024 + 5, 0x61);
      const ref = await encryptToStorage(storage, [plain.subarray(0, 1000), plain.subarray(1000)], { dek: carol.dek, dekId: carol.dekId, tenant: "carol", name: "sized.bin", size: plain.length });
      const got: Buffer[] = [];
      for await (const m of storage.getObject({ tenant: "carol", name: "sized.bin" })) if (m.chunk) got.push(Buffer.from(m.chunk));
      expect(Buffer.concat(got).length).toBe(ref.size);
      expect(Buffer.from(await decryptBytes(Buffer.concat(got), { dek: carol.dek })).equals(plain)).toBe(true);
      await expect(encryptToStorage(storage, [plain], { dek: carol.dek, dekId: carol.dekId, tenant: "carol", name: "wrong.bin", size: plain.length - 1 })).rejects.toMatchObject({ reason: "SOURCE_SIZE_CHANGED" });
    } finally {
      storage.close();
    }
  }, 30_000);
});
