// The trusted deploy server (seed 001). The request manager parses nothing but the request's
// parameters: it streams the upload into quarantine (size and SHA-256 checked, never the
// repository), enforces upload limits and per-account concurrency, and hands the archive to
// an untrusted sandboxed worker. Post-processors validate what the worker returned; only
// then are the artifact (blob store) and its roles, docs and metadata (domain tables) stored,
// in one transaction. Failures are recorded as malicious with the reason; their bytes stay in
// quarantine for inspection until a retention rule purges them.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import { DeployHeader, Deployment, DeploymentStatus, type DeploymentStage } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { Logger } from "../../runtime/logger.js";
import type { BlobStore } from "../../runtime/storage/blob-store.js";
import type { Storage } from "../../runtime/storage/storage.js";
import type { Aac, ArchiveValidator } from "./archive-validator.js";
import type { DeploymentRepository } from "./deployment-repository.js";
import { PostProcessingError, postProcess } from "./post-processors.js";

export interface DeployLimits {
  maxUploadBytes: number;
  maxConcurrentPerAccount: number;
  validationTimeoutMs: number;
  quarantineRetentionMs: number;
}

export const DEFAULT_DEPLOY_LIMITS: DeployLimits = {
  maxUploadBytes: 512 * 1024 * 1024,
  maxConcurrentPerAccount: 4,
  validationTimeoutMs: 60_000,
  quarantineRetentionMs: 7 * 24 * 3600_000,
};

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const FILE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const S = DeploymentStatus;
const TERMINAL = [S.DEPLOYMENT_STATUS_STORED, S.DEPLOYMENT_STATUS_MALICIOUS, S.DEPLOYMENT_STATUS_REJECTED, S.DEPLOYMENT_STATUS_UNDEPLOYED, S.DEPLOYMENT_STATUS_SUPERSEDED];
const ACTIVE = [S.DEPLOYMENT_STATUS_RECEIVING, S.DEPLOYMENT_STATUS_QUARANTINED, S.DEPLOYMENT_STATUS_VALIDATING, S.DEPLOYMENT_STATUS_POST_PROCESSING];

export function statusName(s: DeploymentStatus): string {
  return DeploymentStatus[s]?.replace("DEPLOYMENT_STATUS_", "") ?? String(s);
}

/** Whitelisted data a worker may ask for, always about its own operation's AAC. */
export const RESOURCE_PROVIDERS = ["roles.current", "runtime.descriptor"] as const;

const DEPLOY_METHOD = "/trustplane.deploy.v1.DeployService/Deploy";

/** A concurrent push with the same request_id created its deployment first. */
class IdempotentRace extends Error {}

export class DeployManager {
  private readonly active = new Map<string, number>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private stopping = false;
  private readonly listeners = new Map<string, Set<() => void>>();

  constructor(
    private readonly deps: {
      storage: Storage;
      repo: DeploymentRepository;
      blobs: BlobStore;
      validator: ArchiveValidator;
      quarantineDir: string;
      logger: Logger;
      limits?: Partial<DeployLimits>;
      now?: () => number;
    },
  ) {}

  private get limits(): DeployLimits {
    return { ...DEFAULT_DEPLOY_LIMITS, ...this.deps.limits };
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  quarantinePath(operationId: string): string {
    return path.join(this.deps.quarantineDir, `${operationId}.archive`);
  }

  validateHeader(h: DeployHeader | undefined): asserts h is DeployHeader & { aac: Aac } {
    if (!h) throw invalidArgument("header", "the first message of a deploy stream must be its header");
    for (const k of ["account", "application", "component"] as const) {
      if (!NAME_RE.test(h.aac?.[k] ?? "")) throw invalidArgument(`aac.${k}`, "use 1-63 lowercase letters, digits, dots, dashes or underscores");
    }
    if (!FILE_RE.test(h.fileName)) throw invalidArgument("file_name", "use a plain file name (letters, digits, dots, dashes, underscores), no path");
    if (h.declaredSize <= 0) throw invalidArgument("declared_size", "must be the archive's size in bytes");
    if (h.declaredSize > this.limits.maxUploadBytes) {
      throw new TrustplaneError("RESOURCE_EXHAUSTED", "UPLOAD_TOO_LARGE", `archives may be at most ${this.limits.maxUploadBytes} bytes; this one declares ${h.declaredSize}`, "declared_size");
    }
    if (h.sha256.length !== 32) throw invalidArgument("sha256", "must be the archive's 32-byte SHA-256");
  }

  private async stage(d: Deployment, status: DeploymentStatus, detail: string, reason = "", progress = 0): Promise<DeploymentStage> {
    const st = await this.deps.repo.addStage(d.operationId, { status, detail, reason, progress, timeMs: this.now() });
    for (const l of this.listeners.get(d.operationId) ?? []) l();
    return st;
  }

  private async move(d: Deployment, to: DeploymentStatus, detail: string, patch: Partial<Deployment> = {}): Promise<Deployment> {
    const next: Deployment = { ...d, ...patch, status: to, updatedAtMs: this.now() };
    if (!(await this.deps.repo.compareAndSet(d.status, next))) {
      throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `deployment ${d.operationId} changed meanwhile`);
    }
    await this.stage(next, to, detail, next.reason);
    return next;
  }

  private track(p: Promise<unknown>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /**
   * Called before the workers are stopped: validations cut short from here on are left as
   * they are (QUARANTINED/VALIDATING) for recover() after the restart, never judged
   * malicious for the server's own stop. `drained()` waits until nothing writes any more.
   */
  beginStop(): void {
    this.stopping = true;
  }

  async drained(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  /** Receives a deploy stream into quarantine and starts validation; returns once quarantined. */
  async receive(stream: AsyncIterable<{ header?: DeployHeader; chunk?: Uint8Array }>, principal: string, isAdmin: boolean, onBytes?: (n: number) => void): Promise<Deployment> {
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    const header = first.done ? undefined : first.value.header;
    this.validateHeader(header);
    if (!isAdmin && principal !== header.aac.account) {
      throw new TrustplaneError("PERMISSION_DENIED", "AAC_DENIED", `${principal} may not deploy for account ${header.aac.account}`, "aac.account");
    }
    // Idempotent under the header's request_id: a retried push (same header) gets the
    // deployment the first one created, without a second upload; a different header under a
    // used request_id is refused. The binder's idempotency covers unary calls only.
    const idem = header.requestId ? { scope: `${principal} ${DEPLOY_METHOD}`, digest: createHash("sha256").update(DeployHeader.encode(header).finish()).digest() } : undefined;
    if (idem) {
      const previous = await this.replayed(idem.scope, header.requestId, idem.digest);
      if (previous) return previous;
    }
    const running = this.active.get(header.aac.account) ?? 0;
    if (running >= this.limits.maxConcurrentPerAccount) {
      throw new TrustplaneError("RESOURCE_EXHAUSTED", "TOO_MANY_DEPLOYMENTS", `account ${header.aac.account} already has ${running} deployments in progress (limit ${this.limits.maxConcurrentPerAccount}); wait for one to finish`);
    }
    this.active.set(header.aac.account, running + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.active.set(header.aac.account, (this.active.get(header.aac.account) ?? 1) - 1);
    };
    const t = this.now();
    let d: Deployment = Deployment.fromPartial({
      operationId: `op_${randomBytes(10).toString("hex")}`,
      aac: header.aac,
      fileName: header.fileName,
      size: header.declaredSize,
      sha256: header.sha256,
      status: S.DEPLOYMENT_STATUS_RECEIVING,
      deployedBy: principal,
      createdAtMs: t,
      updatedAtMs: t,
    });
    try {
      let raced: Deployment | undefined;
      await this.deps.storage.db.transaction(async () => {
        await this.deps.repo.create(d);
        if (!idem) return;
        await this.deps.storage.idempotency.put(idem.scope, header.requestId, idem.digest, Buffer.from(d.operationId));
        const winner = await this.deps.storage.idempotency.get(idem.scope, header.requestId);
        if (winner && Buffer.from(winner.response).toString() !== d.operationId) throw new IdempotentRace();
      }).catch(async (e) => {
        if (!(e instanceof IdempotentRace)) throw e;
        raced = await this.replayed(idem!.scope, header.requestId, idem!.digest);
      });
      if (raced) {
        release();
        return raced;
      }
      await this.stage(d, S.DEPLOYMENT_STATUS_RECEIVING, `receiving ${header.fileName} (${header.declaredSize} bytes)`);
      await mkdir(this.deps.quarantineDir, { recursive: true, mode: 0o700 });
      const part = `${this.quarantinePath(d.operationId)}.part`;
      const hash = createHash("sha256");
      let size = 0;
      const declared = header.declaredSize;
      const out = createWriteStream(part, { flags: "wx", mode: 0o600 });
      // The file is opened asynchronously: a stream refused at its first chunk would otherwise
      // have its .part removed before the open creates it, and the file would stay behind.
      const closed = new Promise<void>((resolve) => out.once("close", () => resolve()));
      try {
        await pipeline(
          (async function* () {
            for (let r = await it.next(); !r.done; r = await it.next()) {
              const chunk = r.value.chunk;
              if (!chunk) throw invalidArgument("chunk", "after the header, a deploy stream carries only chunks");
              size += chunk.length;
              if (size > declared) throw invalidArgument("declared_size", `the upload is larger than its declared ${declared} bytes`, "UPLOAD_SIZE_MISMATCH");
              hash.update(chunk);
              onBytes?.(size);
              yield chunk;
            }
          })(),
          out,
        );
        if (size !== declared) throw invalidArgument("declared_size", `received ${size} bytes, declared ${declared}`, "UPLOAD_SIZE_MISMATCH");
        if (!hash.digest().equals(Buffer.from(header.sha256))) throw new TrustplaneError("DATA_LOSS", "UPLOAD_DIGEST_MISMATCH", "the upload's SHA-256 differs from the declared one", "sha256");
        await rename(part, this.quarantinePath(d.operationId));
      } catch (e) {
        out.destroy();
        await closed;
        await rm(part, { force: true });
        const err = e instanceof TrustplaneError ? e : new TrustplaneError("ABORTED", "UPLOAD_INTERRUPTED", `the upload ended early: ${(e as Error).message}`);
        d = await this.move(d, S.DEPLOYMENT_STATUS_REJECTED, err.message, { reason: err.reason, detail: err.message });
        throw err;
      }
      d = await this.move(d, S.DEPLOYMENT_STATUS_QUARANTINED, `quarantined as ${d.operationId}; handing it to a sandboxed worker`);
      await this.deps.storage.audit.append({ principal, action: "deploy.receive", target: `${header.aac.account}/${header.aac.application}/${header.aac.component}`, outcome: "ok", requestId: header.requestId, detail: { operationId: d.operationId, size } });
    } catch (e) {
      release();
      throw e;
    }
    this.track(this.process(d).catch((e: Error) => this.deps.logger.error({ operationId: d.operationId, err: e.message }, "deployment processing failed")).finally(release));
    return d;
  }

  /** The deployment a request_id already created, or undefined; a different header under it is refused. */
  private async replayed(scope: string, requestId: string, digest: Buffer): Promise<Deployment | undefined> {
    const previous = await this.deps.storage.idempotency.get(scope, requestId);
    if (!previous) return undefined;
    if (!digest.equals(previous.requestDigest)) {
      throw new TrustplaneError("ALREADY_EXISTS", "REQUEST_ID_REUSED", `request_id ${JSON.stringify(requestId)} was already used for a different deploy; use a new request_id`, "request_id");
    }
    const d = await this.deps.repo.get(Buffer.from(previous.response).toString());
    if (!d) throw new TrustplaneError("NOT_FOUND", "DEPLOYMENT_NOT_FOUND", `request_id ${JSON.stringify(requestId)} names a deployment that no longer exists`, "request_id");
    return d;
  }

  private async resources(d: Deployment, providerId: string, aac: Aac): Promise<string> {
    const own = d.aac!;
    if (aac.account !== own.account || aac.application !== own.application || aac.component !== own.component) {
      throw new TrustplaneError("PERMISSION_DENIED", "AAC_MISMATCH", `a worker for ${own.account}/${own.application}/${own.component} asked about another AAC`);
    }
    if (providerId === "roles.current") return JSON.stringify({ roles: await this.deps.repo.currentRoles(own) });
    if (providerId === "runtime.descriptor") return JSON.stringify({ runtime: "node", version: process.versions.node });
    throw new TrustplaneError("PERMISSION_DENIED", "PROVIDER_NOT_ALLOWED", `resource provider ${JSON.stringify(providerId)} is not whitelisted (${RESOURCE_PROVIDERS.join(", ")})`);
  }

  /**
   * Validation in a worker, post-processing, then the atomic store (or MALICIOUS with the
   * reason). A failure on the server's own side (storage, blob store) is not the archive's
   * fault: the deployment ends REJECTED with STORE_FAILED, never stuck half-way, and its
   * bytes stay in quarantine.
   */
  async process(d: Deployment): Promise<Deployment> {
    const at = { d };
    try {
      return await this.validateAndStore(at);
    } catch (e) {
      const cur = (await this.deps.repo.get(d.operationId)) ?? at.d;
      if (!ACTIVE.includes(cur.status)) throw e;
      const message = `the server could not finish this deployment: ${(e as Error).message}; deploy again`;
      await this.move(cur, S.DEPLOYMENT_STATUS_REJECTED, message, { reason: "STORE_FAILED", detail: message }).catch(() => undefined);
      throw e;
    }
  }

  private async validateAndStore(at: { d: Deployment }): Promise<Deployment> {
    let d = at.d;
    const started = this.now();
    d = at.d = await this.move(d, S.DEPLOYMENT_STATUS_VALIDATING, "validating in a sandboxed worker");
    let lastProgress = 0;
    const outcome = await this.deps.validator.validate({
      operationId: d.operationId,
      aac: d.aac!,
      archivePath: this.quarantinePath(d.operationId),
      sha256: d.sha256,
      timeoutMs: this.limits.validationTimeoutMs,
      onProgress: (p) => {
        const frac = p.entriesTotal ? p.entriesDone / p.entriesTotal : 0;
        if (frac - lastProgress >= 0.1 || frac === 1) {
          lastProgress = frac;
          void this.stage(d, S.DEPLOYMENT_STATUS_VALIDATING, `${p.entriesDone}/${p.entriesTotal} entries, ${p.bytesInflated} bytes inflated`, "", frac).catch(() => undefined);
        }
      },
      resources: (providerId, aac) => this.resources(d, providerId, aac),
    });
    if (!outcome.ok && (this.stopping || outcome.reason === "POOL_CLOSED")) {
      this.deps.logger.info({ operationId: d.operationId }, "validation interrupted by the server stopping; it resumes after the restart");
      return d;
    }
    if (!outcome.ok) {
      return this.move(d, S.DEPLOYMENT_STATUS_MALICIOUS, `rejected: ${outcome.reason}`, { reason: outcome.reason, detail: outcome.detail, validationMs: this.now() - started });
    }
    d = at.d = await this.move(d, S.DEPLOYMENT_STATUS_POST_PROCESSING, `validated ${outcome.entryCount} entries; post-processing`, { entryCount: outcome.entryCount, uncompressedSize: outcome.uncompressedSize });
    let content;
    try {
      content = postProcess(outcome.outputs, d.aac!);
    } catch (e) {
      const reason = e instanceof PostProcessingError ? e.reason : "WORKER_OUTPUT_INVALID";
      return this.move(d, S.DEPLOYMENT_STATUS_MALICIOUS, `rejected by post-processing: ${reason}`, { reason, detail: (e as Error).message, validationMs: this.now() - started });
    }
    // The artifact first (content-addressed, so a crash here leaves only an unreferenced blob),
    // then every record of the deployment in one transaction: fully stored or not at all.
    const blob = await this.deps.blobs.put(createReadStream(this.quarantinePath(d.operationId)), { expectedDigest: Buffer.from(d.sha256).toString("hex") });
    const stored: Deployment = {
      ...d,
      ...content,
      status: S.DEPLOYMENT_STATUS_STORED,
      artifactDigest: blob.digest,
      validationMs: this.now() - started,
      updatedAtMs: this.now(),
    };
    let superseded: Deployment[] = [];
    await this.deps.storage.db.transaction(async () => {
      if (!(await this.deps.repo.compareAndSet(d.status, stored))) throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `deployment ${d.operationId} changed meanwhile`);
      // The AAC's previous deployment stops being the stored one in the same transaction.
      superseded = (await this.deps.repo.storedFor(stored.aac!)).filter((p) => p.operationId !== stored.operationId);
      for (const p of superseded) await this.deps.repo.compareAndSet(S.DEPLOYMENT_STATUS_STORED, { ...p, status: S.DEPLOYMENT_STATUS_SUPERSEDED, updatedAtMs: this.now() });
      await this.deps.repo.replaceDomain(stored);
      await this.deps.storage.audit.append({ principal: stored.deployedBy, action: "deploy.store", target: `${stored.aac!.account}/${stored.aac!.application}/${stored.aac!.component}`, outcome: "ok", requestId: stored.operationId, detail: { artifact: blob.digest, roles: stored.roles.length } });
    });
    for (const p of superseded) await this.stage(p, S.DEPLOYMENT_STATUS_SUPERSEDED, `superseded by ${stored.operationId}`);
    await this.stage(stored, S.DEPLOYMENT_STATUS_STORED, `stored as ${blob.digest.slice(0, 16)}…: ${stored.roles.length} roles, ${stored.docs.length} docs, ${stored.metadata.size} metadata keys`);
    await rm(this.quarantinePath(d.operationId), { force: true });
    return stored;
  }

  /** After a restart: unfinished uploads are rejected; quarantined archives are validated again. */
  async recover(): Promise<void> {
    for (const d of await this.deps.repo.inStatus(ACTIVE)) {
      if (d.status === S.DEPLOYMENT_STATUS_RECEIVING) {
        await rm(`${this.quarantinePath(d.operationId)}.part`, { force: true });
        await this.move(d, S.DEPLOYMENT_STATUS_REJECTED, "the server stopped during the upload; deploy again", { reason: "UPLOAD_INTERRUPTED" }).catch(() => undefined);
        continue;
      }
      // Back to QUARANTINED, then the normal path: validation is idempotent, the store atomic.
      const back = { ...d, status: S.DEPLOYMENT_STATUS_QUARANTINED, updatedAtMs: this.now() };
      if (d.status !== S.DEPLOYMENT_STATUS_QUARANTINED && !(await this.deps.repo.compareAndSet(d.status, back))) continue;
      await this.stage(back, S.DEPLOYMENT_STATUS_QUARANTINED, "resumed after a server restart");
      this.track(this.process(back).catch((e: Error) => this.deps.logger.error({ operationId: d.operationId, err: e.message }, "resumed deployment failed")));
    }
  }

  /** Removes quarantined archives of rejected/malicious deployments older than the retention. */
  async purgeQuarantine(): Promise<number> {
    let purged = 0;
    const cutoff = this.now() - this.limits.quarantineRetentionMs;
    for (const name of await readdir(this.deps.quarantineDir).catch(() => [] as string[])) {
      const file = path.join(this.deps.quarantineDir, name);
      const s = await stat(file).catch(() => undefined);
      if (!s || s.mtimeMs > cutoff) continue;
      const d = await this.deps.repo.get(name.replace(/\.archive(\.part)?$/, ""));
      if (d && ACTIVE.includes(d.status)) continue;
      await rm(file, { force: true });
      purged++;
    }
    return purged;
  }

  async undeploy(operationId: string, principal: string, requestId: string): Promise<Deployment> {
    const d = await this.deps.repo.get(operationId);
    if (!d) throw new TrustplaneError("NOT_FOUND", "DEPLOYMENT_NOT_FOUND", `no deployment ${operationId}`, "operation_id");
    if (d.status !== S.DEPLOYMENT_STATUS_STORED) {
      throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `only a STORED deployment can be undeployed; ${operationId} is ${statusName(d.status)}`, "operation_id");
    }
    const next: Deployment = { ...d, status: S.DEPLOYMENT_STATUS_UNDEPLOYED, updatedAtMs: this.now() };
    await this.deps.storage.db.transaction(async () => {
      if (!(await this.deps.repo.compareAndSet(d.status, next))) throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `deployment ${operationId} changed meanwhile`);
      await this.deps.repo.removeDomain(d);
      await this.deps.storage.audit.append({ principal, action: "deploy.undeploy", target: `${d.aac!.account}/${d.aac!.application}/${d.aac!.component}`, outcome: "ok", requestId, detail: { operationId } });
    });
    await this.stage(next, S.DEPLOYMENT_STATUS_UNDEPLOYED, "undeployed");
    return next;
  }

  /** Stages after `afterSeq`, until the deployment reaches a final status or `signal` aborts. */
  async *watch(operationId: string, signal: AbortSignal): AsyncGenerator<{ stage: DeploymentStage; deployment?: Deployment }> {
    let last = 0;
    let wake: (() => void) | undefined;
    const listener = () => wake?.();
    const set = this.listeners.get(operationId) ?? new Set();
    set.add(listener);
    this.listeners.set(operationId, set);
    signal.addEventListener("abort", listener);
    try {
      while (!signal.aborted) {
        const stages = await this.deps.repo.stagesAfter(operationId, last);
        for (const s of stages) {
          last = s.seq;
          // A terminal stage ends the watch only if it is still current: a STORED deployment
          // may later be SUPERSEDED or UNDEPLOYED, and a replay shows that too.
          if (TERMINAL.includes(s.status)) {
            const current = await this.deps.repo.get(operationId);
            if (!current || current.status === s.status) {
              yield { stage: s, deployment: current };
              return;
            }
          }
          yield { stage: s };
        }
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 1000).unref();
        });
      }
    } finally {
      set.delete(listener);
      signal.removeEventListener("abort", listener);
    }
  }
}
