// Example flow (seed 003): a client encrypts a text with its own DEK, uploads the ciphertext,
// opens a session proven by its signing key, and runs a word-frequency WebAssembly job in a
// job VM (a VM from the scheduler) that gets the DEK only sealed to its host-attested
// ephemeral key; the encrypted result is stored, then fetched and opened locally. Replaying
// the job's one-time key is refused and surfaced.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { SecurityEvent } from "../sdk/src/gen/trustplane/job/v1/job.js";
import { encryptToStorage, KeyHolder, openSession, runJob } from "../sdk/src/job/index.js";
import { TrustplaneError } from "../sdk/src/errors.js";
import { buildJobModule } from "../scripts/build-wasm-jobs.js";
import { demoCaKeys } from "./secure-job-support.js";
import { standaloneContext, type ExampleFlow, type TourContext } from "./tour-context.js";

const TEXT = `It was the best of times, it was the worst of times, it was the age of wisdom,
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity,
it was the season of Light, it was the season of Darkness, it was the spring of hope,
it was the winter of despair.
`;

export const secureJobWordFrequencyFlow: ExampleFlow = {
  name: "secure-job-word-frequency",
  title: "Secure job: encrypted upload, proven session, one-time key, word frequency in a job VM",
  async run(ctx: TourContext) {
    const clientDir = mkdtempSync(path.join(os.tmpdir(), "tp-demo-client-"));
    const caKeys = await demoCaKeys(ctx, clientDir);
    const keyHolder = await KeyHolder.open({ ledgerPath: path.join(clientDir, "otk-ledger.jsonl"), caKeys });
    const dek = randomBytes(32);
    keyHolder.addDek("demo-dek", dek);
    const session = await openSession(ctx.server, ctx.admin, { keyHolder, variant: "sign" });
    try {
      ctx.say(`session ${session.id.slice(0, 16)}… established: the service's nonce was signed by the client key`);
      const name = `demo/tale-${Date.now().toString(36)}.txt`;
      const ref = await encryptToStorage(session.storage, [Buffer.from(TEXT.repeat(20))], { dek, dekId: "demo-dek", tenant: "admin", name });
      ctx.say(`uploaded ${ref.size} bytes of envelope ciphertext as admin/${name} (the service never sees the DEK)`);
      keyHolder.on("keyRequest", (r: { jobId: string; codeSha256: string; hostId: string; vmId: string }) =>
        ctx.say(`key holder: job VM ${r.vmId} of ${r.jobId.slice(0, 12)}… asks for the DEK for code ${r.codeSha256.slice(0, 12)}…; host ${r.hostId} attested its key (CA-certified); released once, sealed to that key`),
      );
      const code = await buildJobModule("word-frequency");
      const { job, output } = await runJob(session, code, { stored: { tenant: "admin", name }, dekId: "demo-dek" });
      const top = Buffer.from(output)
        .toString("utf8")
        .trim()
        .split("\n")
        .map((l) => l.split("\t") as [string, string])
        .sort((a, b) => Number(b[1]) - Number(a[1]))
        .slice(0, 5);
      ctx.say(`job ${job.jobId.slice(0, 12)}… stored its encrypted result at ${job.result?.tenant}/${job.result?.name}; opened locally:`);
      ctx.say(`  top words: ${top.map(([w, n]) => `${w}=${n}`).join(", ")}`);

      // A replayed OTK: the key holder's ledger says it was used, so it refuses; the job fails.
      const { createHash } = await import("node:crypto");
      const otk = await keyHolder.issueOtk({ codeSha256: createHash("sha256").update(code).digest(), dekId: "demo-dek", data: { tenant: "admin", name } });
      await runJob(session, code, { stored: { tenant: "admin", name }, dekId: "demo-dek" }, { otk, resultMode: "returned" });
      const seen: SecurityEvent[] = [];
      session.on("securityEvent", (e: SecurityEvent) => seen.push(e));
      try {
        await runJob(session, code, { stored: { tenant: "admin", name }, dekId: "demo-dek" }, { otk, resultMode: "returned" });
        throw new Error("the reused OTK was accepted");
      } catch (e) {
        if (!(e instanceof TrustplaneError) || e.reason !== "JOB_SECURITY_EVENT") throw e;
      }
      ctx.say(`a second job with the same one-time key was refused: security event ${seen.map((s) => s.reason).join(", ")}`);
      await session.storage.deleteObject({ requestId: `demo-del-${Date.now()}`, tenant: "admin", name });
    } finally {
      session.close();
      await keyHolder.close();
      rmSync(clientDir, { recursive: true, force: true });
    }
  },
};

if (process.argv[1]?.endsWith("secure-job-word-frequency.ts")) {
  await secureJobWordFrequencyFlow.run(standaloneContext());
}
