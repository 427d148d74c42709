// Job records (seed 003) in SQL: state, owner, session, code digest, data and result
// locations. Written on every state change so GetJob answers after a restart; no keys, no
// OTKs and no plaintext are ever stored here.
import { Job } from "../../../sdk/src/gen/trustplane/job/v1/job.js";
import type { SqlDb } from "../runtime/storage/sql-db.js";

interface Row {
  job_id: string;
  owner: string;
  session_id: string;
  state: number | string;
  failure_reason: string;
  code_sha256: string;
  data_json: string;
  result_json: string;
  result_mode: number | string;
  created_at_ms: number | string;
  updated_at_ms: number | string;
}

export class JobRepository {
  constructor(private readonly db: SqlDb) {}

  async save(job: Job): Promise<void> {
    const extra = JSON.stringify({ result: job.result ?? null, limits: job.limits ?? null, dekId: job.dekId, resultSize: job.resultSize, vmId: job.vmId });
    const params = [job.owner, job.sessionId, job.state, job.failureReason, Buffer.from(job.codeSha256).toString("hex"), JSON.stringify(job.data ?? null), extra, job.resultMode, job.createdAtMs, job.updatedAtMs, job.jobId];
    const r = await this.db.run(
      "UPDATE jobs SET owner = ?, session_id = ?, state = ?, failure_reason = ?, code_sha256 = ?, data_json = ?, result_json = ?, result_mode = ?, created_at_ms = ?, updated_at_ms = ? WHERE job_id = ?",
      params,
    );
    if (r.changes === 0) {
      await this.db.run(
        "INSERT INTO jobs (owner, session_id, state, failure_reason, code_sha256, data_json, result_json, result_mode, created_at_ms, updated_at_ms, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params,
      );
    }
  }

  async get(jobId: string): Promise<Job | undefined> {
    const r = await this.db.get<Row>("SELECT * FROM jobs WHERE job_id = ?", [jobId]);
    if (!r) return undefined;
    const extra = JSON.parse(r.result_json) as { result: Job["result"] | null; limits: Job["limits"] | null; dekId: string; resultSize: number; vmId: string };
    return Job.fromPartial({
      jobId: r.job_id,
      owner: r.owner,
      sessionId: r.session_id,
      state: Number(r.state),
      failureReason: r.failure_reason,
      codeSha256: Buffer.from(r.code_sha256, "hex"),
      data: JSON.parse(r.data_json) ?? undefined,
      result: extra.result ?? undefined,
      limits: extra.limits ?? undefined,
      dekId: extra.dekId,
      resultSize: extra.resultSize,
      vmId: extra.vmId,
      resultMode: Number(r.result_mode),
      createdAtMs: Number(r.created_at_ms),
      updatedAtMs: Number(r.updated_at_ms),
    });
  }
}
