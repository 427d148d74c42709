// The corpus generator's file entry point (scripts/make-zip-corpus.ts, seed 001 tests): makeCorpus
// writes every case to disk, and each file read back is accepted or rejected by the core
// processor exactly as its recorded reason says.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeCorpus } from "../../scripts/make-zip-corpus.js";
import { processArchive } from "../../server/src/deploy/worker/core-processor.js";
import { TrustplaneError } from "../../sdk/src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "tp-corpus-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("makeCorpus", () => {
  it("writes good and bad archives whose verdicts match their reasons", async () => {
    const { good, bad } = await makeCorpus(dir);
    expect(Object.keys(good).sort()).toEqual(["good-node.zip", "good.war"]);
    expect(bad.length).toBeGreaterThanOrEqual(18);
    for (const path of Object.values(good)) await expect(processArchive(readFileSync(path))).resolves.toBeTruthy();
    for (const { file, reason } of bad) {
      const err = await processArchive(readFileSync(file)).then(() => null, (e: unknown) => e);
      expect(err, file).toBeInstanceOf(TrustplaneError);
      expect((err as TrustplaneError).reason, file).toBe(reason);
    }
  });
});
