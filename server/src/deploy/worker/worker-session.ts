// One validation inside a deploy worker (deploy validation, seed 001): checks the archive
// is the one the server verified, runs the core processor and the sub-processors (which may
// ask the server's resource provider), writes each result as JSON into scratch and returns
// only identifiers.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve, sep } from "node:path";
import type { ValidateArchive, WorkerToServer } from "../../../../sdk/src/gen/trustplane/deploy/v1/worker.js";
import { processArchive } from "./core-processor.js";
import { securityProcessor } from "./processors/security/security-processor.js";
import { documentationProcessor } from "./processors/documentation/documentation-processor.js";
import { metadataProcessor } from "./processors/metadata/metadata-processor.js";
import type { SubProcessor, SubProcessorContext } from "./processors/sub-processor.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";

const PROCESSORS: SubProcessor[] = [securityProcessor, documentationProcessor, metadataProcessor];

export async function runValidation(req: ValidateArchive, scratch: string, send: (m: WorkerToServer) => void, ctx: SubProcessorContext): Promise<WorkerToServer> {
  const operationId = req.operationId;
  try {
    const path = resolve(scratch, req.archivePath);
    if (!path.startsWith(resolve(scratch) + sep)) throw new TrustplaneError("INVALID_ARGUMENT", "WORKER_BAD_REQUEST", "archive path is outside scratch");
    const buf = readFileSync(path);
    if (req.archiveSize && buf.length !== req.archiveSize) throw new TrustplaneError("INVALID_ARGUMENT", "ARCHIVE_SIZE_MISMATCH", "archive size differs from the upload");
    if (req.archiveSha256?.length && !createHash("sha256").update(buf).digest().equals(Buffer.from(req.archiveSha256))) {
      throw new TrustplaneError("INVALID_ARGUMENT", "ARCHIVE_DIGEST_MISMATCH", "archive digest differs from the upload");
    }
    let lastProgress = 0;
    const core = await processArchive(buf, {
      limits: req.limits,
      onProgress: (p) => {
        const now = Date.now();
        if (now - lastProgress < 100 && p.entriesDone !== p.entriesTotal) return;
        lastProgress = now;
        send({ progress: p });
      },
    });
    const wanted = req.processorIds.length ? PROCESSORS.filter((p) => req.processorIds.includes(p.id)) : PROCESSORS;
    const outputs = [];
    for (const p of wanted) {
      const result = await p.run(core.files, ctx);
      const json = Buffer.from(JSON.stringify({ processorId: p.id, account: req.account, application: req.application, component: req.component, result }));
      const file = `${p.id}.json`;
      writeFileSync(join(scratch, file), json, { mode: 0o600 });
      outputs.push({ processorId: p.id, file, sha256: createHash("sha256").update(json).digest(), size: json.length });
    }
    return { result: { operationId, outputs, entryCount: core.entryCount, uncompressedSize: core.uncompressedSize } };
  } catch (e) {
    const reason = e instanceof TrustplaneError ? e.reason : "WORKER_INTERNAL";
    const detail = e instanceof Error ? e.message : String(e);
    return { failure: { operationId, reason, detail: detail.slice(0, 1000) } };
  }
}
