// Example flow (seed 003, the direct variant): CSV data goes straight to the job VM as inline
// envelope ciphertext and the encrypted result comes back over the session instead of being
// stored. The session is proven with the encrypt-to-client-key challenge, and the key holder
// has an approval policy: it releases the DEK only for the CSV module's code digest.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { encryptBytes } from "../sdk/src/envelope/envelope-bytes.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { KeyHolder, openSession, runJob } from "../sdk/src/job/index.js";
import { buildJobModule } from "../scripts/build-wasm-jobs.js";
import { demoCaKeys } from "./secure-job-support.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const CSV = `station,temp_c,rain_mm,wind_kmh
Bergen,7.5,22.1,31
Oslo,-2.25,3.4,12
Tromso,-8,1.2,40
Stavanger,6.75,15.8,28
`;

export const secureJobCsvAggregateFlow: ExampleFlow = {
  name: "secure-job-csv-aggregate",
  title: "Secure job: inline data to the job VM, result over the session, approval by code digest",
  async run(ctx: TourContext) {
    const clientDir = mkdtempSync(path.join(os.tmpdir(), "tp-demo-client-"));
    const code = await buildJobModule("csv-aggregate");
    const approved = createHash("sha256").update(code).digest("hex");
    const caKeys = await demoCaKeys(ctx, clientDir);
    const keyHolder = await KeyHolder.open({ ledgerPath: path.join(clientDir, "otk-ledger.jsonl"), policy: (r) => r.codeSha256 === approved, caKeys });
    const dek = randomBytes(32);
    keyHolder.addDek("weather-dek", dek);
    const session = await openSession(ctx.server, ctx.admin, { keyHolder, variant: "encrypt" });
    try {
      ctx.say(`session ${session.id.slice(0, 16)}… established: the client opened the secret sealed to its X25519 key`);
      const inline = await encryptBytes(Buffer.from(CSV), { dek, dekId: "weather-dek" });
      const { output } = await runJob(session, code, { inline, dekId: "weather-dek" }, { resultMode: "returned" });
      const b = Buffer.from(output);
      const header = CSV.split("\n")[0]!.split(",");
      for (let c = 0; c < b.readUInt32LE(0); c++) {
        const [n, sum, min, max] = [0, 1, 2, 3].map((k) => b.readDoubleLE(4 + c * 32 + k * 8)) as [number, number, number, number];
        if (n > 0) ctx.say(`  ${header[c]}: n=${n} mean=${(sum / n).toFixed(2)} min=${min} max=${max}`);
      }
      ctx.say("the result came back over the session as envelope ciphertext and was opened with the client's DEK");
      const other = await buildJobModule("byte-sum");
      try {
        await runJob(session, other, { inline, dekId: "weather-dek" }, { resultMode: "returned" });
        throw new Error("the unapproved module got the key");
      } catch (e) {
        if (!(e instanceof TrustplaneError) || e.reason !== "KEY_DENIED") throw e;
        ctx.say(`another module (code ${createHash("sha256").update(other).digest("hex").slice(0, 12)}…) was refused the key by the client's policy`);
      }
    } finally {
      session.close();
      await keyHolder.close();
      rmSync(clientDir, { recursive: true, force: true });
    }
  },
};

if (process.argv[1]?.endsWith("secure-job-csv-aggregate.ts")) {
  await secureJobCsvAggregateFlow.run(standaloneContext());
}
