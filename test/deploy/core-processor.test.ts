// Table test of the deploy worker's core processor (seed 001): every corpus case is rejected
// with its own reason code, before any inflation where the check is a pre-pass check; good
// archives pass with their descriptor files collected.
import { describe, expect, it } from "vitest";
import { processArchive } from "../../server/src/deploy/worker/core-processor.js";
import { prepass } from "../../server/src/deploy/worker/archive-prepass.js";
import { DEFAULT_ARCHIVE_LIMITS } from "../../server/src/deploy/worker/archive-limits.js";
import { goodNodeApp, goodWar, maliciousCases, makeZip } from "../../scripts/make-zip-corpus.js";
import { TrustplaneError } from "../../sdk/src/errors.js";

async function reasonOf(bytes: Buffer, limits?: Parameters<typeof processArchive>[1]): Promise<string> {
  try {
    await processArchive(bytes, limits);
    return "OK";
  } catch (e) {
    if (e instanceof TrustplaneError) return e.reason;
    throw e;
  }
}

describe("core processor corpus", () => {
  const cases = maliciousCases();
  it.each(cases.map((c) => [c.file, c.reason, c.bytes] as const))("%s → %s", async (_file, reason, bytes) => {
    expect(await reasonOf(bytes)).toBe(reason);
  });

  it("uses a distinct status per family", async () => {
    const err = await processArchive(cases.find((c) => c.file === "ratio-bomb.zip")!.bytes).catch((e: TrustplaneError) => e);
    expect((err as TrustplaneError).status).toBe("RESOURCE_EXHAUSTED");
    const slip = await processArchive(cases[0]!.bytes).catch((e: TrustplaneError) => e);
    expect((slip as TrustplaneError).status).toBe("INVALID_ARGUMENT");
  });

  it("rejects the overlap bombs in the pre-pass, before inflation", () => {
    for (const c of cases.filter((c) => c.reason === "ARCHIVE_OVERLAP")) {
      expect(() => prepass(c.bytes, DEFAULT_ARCHIVE_LIMITS)).toThrow(expect.objectContaining({ reason: "ARCHIVE_OVERLAP" }));
    }
  });
});

describe("core processor limits", () => {
  it("enforces the global inflation budget across entries", async () => {
    const zip = makeZip([{ name: "a", data: "a".repeat(3000) }, { name: "b", data: "b".repeat(3000) }]);
    expect(await reasonOf(zip, { limits: { maxInflatedTotal: 5000 } })).toBe("ARCHIVE_BUDGET");
    expect(await reasonOf(zip, { limits: { maxTotalSize: 5000 } })).toBe("ARCHIVE_BUDGET");
    expect(await reasonOf(zip, { limits: { maxEntrySize: 2000 } })).toBe("ARCHIVE_ENTRY_TOO_LARGE");
  });

  it("counts nested entries under the same budget and entry cap", async () => {
    const inner = makeZip([{ name: "x", data: "x".repeat(4000) }]);
    const outer = makeZip([{ name: "lib/a.jar", data: inner }, { name: "y", data: "y" }]);
    expect(await reasonOf(outer)).toBe("OK");
    expect(await reasonOf(outer, { limits: { maxInflatedTotal: inner.length + 100 } })).toBe("ARCHIVE_BUDGET");
    expect(await reasonOf(outer, { limits: { maxEntries: 2 } })).toBe("ARCHIVE_TOO_MANY_ENTRIES");
  });

  it("caps the descriptor and documentation bytes it keeps in memory for sub-processors", async () => {
    // 40 READMEs of 1 MiB of distinct text each: every one under the per-file cap, 40 MiB in all.
    let seed = 7;
    const text = () => Array.from({ length: 1_000_000 }, () => String.fromCharCode(97 + ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % 26)).join("");
    const entries = Array.from({ length: 40 }, (_, i) => ({ name: `docs/part-${i}.md`, data: `# Part ${i}\n${text()}` }));
    expect(await reasonOf(makeZip(entries.slice(0, 20)))).toBe("OK");
    expect(await reasonOf(makeZip(entries))).toBe("ARCHIVE_DESCRIPTORS_TOO_LARGE");
  });

  it.each([
    ["a//b", "ARCHIVE_BAD_NAME"],
    ["a/./b", "ARCHIVE_BAD_NAME"],
    ["dir\\file", "ARCHIVE_BAD_NAME"],
    ["x/" + "d/".repeat(40) + "f", "ARCHIVE_BAD_NAME"],
    ["n".repeat(600), "ARCHIVE_BAD_NAME"],
    ["\\\\server\\share", "ARCHIVE_ABSOLUTE_PATH"],
    ["a/../../b", "ARCHIVE_PATH_TRAVERSAL"],
  ])("name %j → %s", async (name, reason) => {
    expect(await reasonOf(makeZip([{ name, data: "x" }]))).toBe(reason);
  });

  it("rejects exact duplicates, local/central method and size disagreement", async () => {
    expect(await reasonOf(makeZip([{ name: "a", data: "1" }, { name: "a", data: "2" }]))).toBe("ARCHIVE_DUPLICATE_NAME");
    expect(await reasonOf(makeZip([{ name: "a", data: "hello", local: { compressedSize: 3 } }]))).toBe("ARCHIVE_HEADER_MISMATCH");
    expect(await reasonOf(makeZip([{ name: "a", data: "hello", cd: { flags: 0x0802 } }]))).toBe("ARCHIVE_HEADER_MISMATCH");
  });

  it("rejects a central directory that points outside the file and multi-disk end records", async () => {
    const zip = makeZip([{ name: "a", data: "x" }]);
    const big = Buffer.from(zip);
    big.writeUInt32LE(0x7fff0000, big.length - 6); // cd offset
    expect(await reasonOf(big)).toBe("ARCHIVE_TRUNCATED");
    const disk = Buffer.from(zip);
    disk.writeUInt16LE(1, disk.length - 18);
    expect(await reasonOf(disk)).toBe("ARCHIVE_MULTI_DISK");
  });
});

describe("good archives", () => {
  it("validates the WAR-like archive and its nested JAR", async () => {
    const r = await processArchive(goodWar());
    expect(r.entryCount).toBe(13);
    expect([...r.files.keys()].sort()).toEqual([
      "META-INF/MANIFEST.MF",
      "META-INF/roles.properties",
      "README.md",
      "WEB-INF/lib/example-lib.jar!/META-INF/MANIFEST.MF",
      "WEB-INF/lib/example-lib.jar!/META-INF/maven/com.example/lib/pom.properties",
      "WEB-INF/web.xml",
    ]);
  });

  it("validates the Node app archive", async () => {
    const r = await processArchive(goodNodeApp());
    expect(r.files.has("package.json")).toBe(true);
    expect(r.files.has("docs/api.md")).toBe(true);
  });
});
