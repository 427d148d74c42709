// Deployment records, their stage log and the domain tables a stored deployment owns. A
// record is the Deployment message itself; status changes are compare-and-set so a restart
// recovering an operation and the operation itself cannot both move it.
import { randomUUID } from "node:crypto";
import { Deployment, DeploymentStage, DeploymentStatus } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { SqlDb } from "../../runtime/storage/sql-db.js";

export class DeploymentRepository {
  constructor(private readonly db: SqlDb) {}

  async create(d: Deployment): Promise<void> {
    await this.db.run("INSERT INTO deployments (operation_id, account, application, component, status, record, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
      d.operationId,
      d.aac!.account,
      d.aac!.application,
      d.aac!.component,
      d.status,
      Buffer.from(Deployment.encode(d).finish()),
      d.createdAtMs,
      d.updatedAtMs,
    ]);
  }

  async get(operationId: string): Promise<Deployment | undefined> {
    const r = await this.db.get<{ record: Buffer }>("SELECT record FROM deployments WHERE operation_id = ?", [operationId]);
    return r && Deployment.decode(r.record);
  }

  async compareAndSet(expected: DeploymentStatus, next: Deployment): Promise<boolean> {
    const { changes } = await this.db.run("UPDATE deployments SET status = ?, record = ?, updated_at_ms = ? WHERE operation_id = ? AND status = ?", [
      next.status,
      Buffer.from(Deployment.encode(next).finish()),
      next.updatedAtMs,
      next.operationId,
      expected,
    ]);
    return changes === 1;
  }

  async list(opts: { account?: string; application?: string; component?: string; status?: DeploymentStatus; pageSize: number; pageToken?: string }): Promise<{ items: Deployment[]; nextPageToken?: string }> {
    const where = ["operation_id > ?"];
    const params: unknown[] = [opts.pageToken ?? ""];
    for (const k of ["account", "application", "component"] as const) if (opts[k]) (where.push(`${k} = ?`), params.push(opts[k]));
    if (opts.status) (where.push("status = ?"), params.push(opts.status));
    const size = Math.max(1, Math.min(opts.pageSize || 100, 1000));
    const rows = await this.db.all<{ record: Buffer }>(`SELECT record FROM deployments WHERE ${where.join(" AND ")} ORDER BY operation_id LIMIT ?`, [...params, size + 1]);
    const items = rows.slice(0, size).map((r) => Deployment.decode(r.record));
    return { items, nextPageToken: rows.length > size ? items[items.length - 1]!.operationId : undefined };
  }

  async inStatus(statuses: DeploymentStatus[]): Promise<Deployment[]> {
    const rows = await this.db.all<{ record: Buffer }>(`SELECT record FROM deployments WHERE status IN (${statuses.map(() => "?").join(", ")})`, statuses);
    return rows.map((r) => Deployment.decode(r.record));
  }

  /** The AAC's deployments in STORED state (one, but for a store in progress). */
  async storedFor(aac: { account: string; application: string; component: string }): Promise<Deployment[]> {
    const rows = await this.db.all<{ record: Buffer }>("SELECT record FROM deployments WHERE account = ? AND application = ? AND component = ? AND status = ?", [aac.account, aac.application, aac.component, DeploymentStatus.DEPLOYMENT_STATUS_STORED]);
    return rows.map((r) => Deployment.decode(r.record));
  }

  async addStage(operationId: string, stage: Omit<DeploymentStage, "seq">): Promise<DeploymentStage> {
    const stageId = randomUUID();
    await this.db.run("INSERT INTO deployment_stages (stage_id, operation_id, record) VALUES (?, ?, ?)", [stageId, operationId, Buffer.from(DeploymentStage.encode({ ...stage, seq: 0 }).finish())]);
    const row = await this.db.get<{ seq: number }>("SELECT seq FROM deployment_stages WHERE stage_id = ?", [stageId]);
    return { ...stage, seq: Number(row!.seq) };
  }

  async stagesAfter(operationId: string, afterSeq: number): Promise<DeploymentStage[]> {
    const rows = await this.db.all<{ seq: number; record: Buffer }>("SELECT seq, record FROM deployment_stages WHERE operation_id = ? AND seq > ? ORDER BY seq", [operationId, afterSeq]);
    return rows.map((r) => ({ ...DeploymentStage.decode(r.record), seq: Number(r.seq) }));
  }

  /** Replaces the AAC's roles, docs and metadata with this deployment's, inside the caller's transaction. */
  async replaceDomain(d: Deployment): Promise<void> {
    const aac = [d.aac!.account, d.aac!.application, d.aac!.component];
    for (const table of ["deploy_roles", "deploy_docs", "deploy_metadata"]) await this.db.run(`DELETE FROM ${table} WHERE account = ? AND application = ? AND component = ?`, aac);
    for (const r of d.roles) await this.db.run("INSERT INTO deploy_roles (account, application, component, operation_id, name, description) VALUES (?, ?, ?, ?, ?, ?)", [...aac, d.operationId, r.name, r.description]);
    for (const doc of d.docs) await this.db.run("INSERT INTO deploy_docs (account, application, component, operation_id, file, title, headings_json) VALUES (?, ?, ?, ?, ?, ?, ?)", [...aac, d.operationId, doc.file, doc.title, JSON.stringify(doc.headings)]);
    for (const [k, v] of d.metadata) await this.db.run("INSERT INTO deploy_metadata (account, application, component, operation_id, meta_key, meta_value) VALUES (?, ?, ?, ?, ?, ?)", [...aac, d.operationId, k, v]);
  }

  async removeDomain(d: Deployment): Promise<void> {
    for (const table of ["deploy_roles", "deploy_docs", "deploy_metadata"]) {
      await this.db.run(`DELETE FROM ${table} WHERE account = ? AND application = ? AND component = ? AND operation_id = ?`, [d.aac!.account, d.aac!.application, d.aac!.component, d.operationId]);
    }
  }

  async currentRoles(aac: { account: string; application: string; component: string }): Promise<{ name: string; description: string }[]> {
    return this.db.all("SELECT name, description FROM deploy_roles WHERE account = ? AND application = ? AND component = ? ORDER BY name", [aac.account, aac.application, aac.component]);
  }
}
