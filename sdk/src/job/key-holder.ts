// The client's key holder (seed 003): issues one-time job keys bound to a job's code, DEK and
// data, and answers key requests forwarded from job VMs. It releases a DEK only for an OTK it
// issued, with a matching binding, never used before, for an ephemeral key the job VM's host
// attested (checked against CA keys pinned here), after its approval policy and every
// "keyRequest" listener (sync or async) agreed — recording the use durably first — sealed with
// HPKE to that key, with info binding job id, OTK digest and code digest.
import { EventEmitter } from "node:events";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { importVerificationKey, type VerificationKey } from "../auth/verification-key.js";
import { TrustplaneError, invalidArgument } from "../errors.js";
import { seal } from "../envelope/hpke.js";
import type { KeyDenied, KeyRelease, KeyRequest } from "../gen/trustplane/job/v1/job.js";
import { dekReleaseInfo, sha256 } from "./job-bindings.js";
import { verifyJobVmAttestation } from "./job-vm-attestation.js";
import { FileOtkLedger, type OtkBinding, type OtkLedger } from "./otk-ledger.js";

/** What an application sees (and may veto) before a DEK leaves. */
export interface KeyRequestInfo {
  jobId: string;
  /** SHA-256 of the module that will run, hex: the usual approval criterion. */
  codeSha256: string;
  dekId: string;
  data: { tenant: string; name: string; digest: string } | { inline: true };
  /** The job VM's ephemeral X25519 public key the DEK would be sealed to. */
  vmPublicKey: Uint8Array;
  /** The host that attested the key (its CA certificate verified) and the VM on it. */
  hostId: string;
  vmId: string;
  /**
   * Call from a "keyRequest" listener to refuse the release. A listener may be async: the
   * key holder awaits every listener's returned promise, so deny() counts until it settles
   * (resolving to `false` denies too).
   */
  deny(reason?: string): void;
}

export type KeyPolicy = (req: KeyRequestInfo) => boolean | Promise<boolean>;

export interface KeyHolderOptions {
  /** Defaults to a FileOtkLedger at ledgerPath. */
  ledger?: OtkLedger;
  ledgerPath?: string;
  /** Approval policy, consulted after the OTK checks; false denies (POLICY_DENIED). */
  policy?: KeyPolicy;
  /**
   * CA public keys (JWK objects or JSON) this client trusts to certify hosts. Pin them out of
   * band (a file, your deployment): a key request's attestation is checked against these only,
   * never against keys that arrived with it. Without any, every release is refused.
   */
  caKeys?: (string | object | VerificationKey)[];
}

export type KeyAnswer = { release: KeyRelease; denied?: undefined } | { denied: KeyDenied; release?: undefined };

export interface IssueOtkInput {
  codeSha256: Uint8Array;
  dekId: string;
  data: { tenant: string; name: string } | { inline: true };
}

export class KeyHolder extends EventEmitter {
  private readonly deks = new Map<string, Uint8Array>();
  private decisions: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly ledger: OtkLedger,
    private readonly caKeys: VerificationKey[],
    private readonly policy?: KeyPolicy,
  ) {
    super();
  }

  static async open(opts: KeyHolderOptions): Promise<KeyHolder> {
    if (!opts.ledger && !opts.ledgerPath) throw invalidArgument("ledgerPath", "give a ledger file path (or a ledger) so OTK uses survive restarts");
    const caKeys = (opts.caKeys ?? []).map((k) => (typeof k === "object" && "verify" in k ? (k as VerificationKey) : importVerificationKey(k as string)));
    const ledger = opts.ledger ?? (await FileOtkLedger.open(opts.ledgerPath!));
    return new KeyHolder(ledger, caKeys, opts.policy);
  }

  /** Makes a DEK available for release (a private copy is kept). */
  addDek(dekId: string, dek: Uint8Array): void {
    if (dek.length !== 32) throw invalidArgument("dek", "must be 32 bytes");
    this.deks.get(dekId)?.fill(0);
    this.deks.set(dekId, Uint8Array.from(dek));
  }

  /** The DEK for opening results locally. */
  dek(dekId: string): Uint8Array {
    const d = this.deks.get(dekId);
    if (!d) throw invalidArgument("dekId", `the key holder has no DEK ${JSON.stringify(dekId)}; addDek it first`, "DEK_UNKNOWN");
    return d;
  }

  /** A fresh 256-bit OTK for one job, recorded (durably) with what it is for. */
  async issueOtk(input: IssueOtkInput): Promise<Uint8Array> {
    this.dek(input.dekId);
    const otk = randomBytes(32);
    const binding: OtkBinding = {
      codeSha256: Buffer.from(input.codeSha256).toString("hex"),
      dekId: input.dekId,
      data: "inline" in input.data ? { inline: true } : { tenant: input.data.tenant, name: input.data.name },
      issuedAtMs: Date.now(),
    };
    await this.ledger.recordIssued(sha256(otk).toString("hex"), binding);
    return new Uint8Array(otk);
  }

  /** Answers one forwarded key request; requests are decided one at a time. */
  handleKeyRequest(req: KeyRequest): Promise<KeyAnswer> {
    const run = this.decisions.then(() => this.decide(req));
    this.decisions = run.catch(() => undefined);
    return run;
  }

  private async decide(req: KeyRequest): Promise<KeyAnswer> {
    const otkDigest = sha256(req.otk);
    const otkHex = otkDigest.toString("hex");
    const deny = (reason: string): KeyAnswer => {
      this.emit("denied", { jobId: req.jobId, reason });
      return { denied: { jobId: req.jobId, requestSeq: req.requestSeq, reason } };
    };
    const burn = async (reason: string): Promise<KeyAnswer> => {
      await this.ledger.recordUse(otkHex, { jobId: req.jobId, outcome: "denied", reason, atMs: Date.now() });
      return deny(reason);
    };
    const entry = this.ledger.lookup(otkHex);
    if (!entry) return deny("OTK_UNKNOWN");
    if (entry.use) return deny("OTK_REUSED");
    const b = entry.binding;
    const data = req.data && req.data.tenant !== "" ? { tenant: req.data.tenant, name: req.data.name, digest: req.data.digest } : ({ inline: true } as const);
    const dataMatches = "inline" in b.data ? "inline" in data : !("inline" in data) && b.data.tenant === data.tenant && b.data.name === data.name;
    if (b.codeSha256 !== Buffer.from(req.codeSha256).toString("hex") || b.dekId !== req.dekId || !dataMatches) return burn("OTK_BINDING_MISMATCH");
    const dek = this.deks.get(req.dekId);
    if (!dek) return deny("DEK_UNKNOWN");
    if (req.vmEphemeralPublicKey.length !== 32) return burn("VM_KEY_INVALID");

    // The key the DEK would be sealed to must be the one the job VM's host attested, for
    // this job, code, data and OTK: neither the service nor the network can swap in its own.
    let attested: { hostId: string; vmId: string };
    try {
      if (this.caKeys.length === 0) throw new TrustplaneError("PERMISSION_DENIED", "ATTESTATION_UNVERIFIABLE", "no CA keys are pinned in this key holder (KeyHolderOptions.caKeys)");
      const { statement } = verifyJobVmAttestation(req.hostAttestation, { caKeys: this.caKeys, nowMs: Date.now() });
      const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && timingSafeEqual(a, b);
      const sameData = "inline" in data ? !statement.data || statement.data.tenant === "" : statement.data?.tenant === data.tenant && statement.data.name === data.name && statement.data.digest === data.digest;
      if (statement.jobId !== req.jobId || !same(statement.ephemeralPublicKey, req.vmEphemeralPublicKey) || !same(statement.codeSha256, req.codeSha256) || !same(statement.otkSha256, otkDigest) || !sameData) {
        throw new TrustplaneError("PERMISSION_DENIED", "ATTESTATION_MISMATCH", "the host attested another key, job, code, data or OTK than this request names");
      }
      attested = { hostId: statement.hostId, vmId: statement.vmId };
    } catch (e) {
      const reason = e instanceof TrustplaneError ? e.reason : "ATTESTATION_INVALID";
      this.emit("attestationRefused", { jobId: req.jobId, reason, detail: (e as Error).message });
      return burn(reason);
    }

    let vetoed: string | undefined;
    let settled = false;
    const info: KeyRequestInfo = {
      jobId: req.jobId,
      codeSha256: b.codeSha256,
      dekId: req.dekId,
      data,
      vmPublicKey: req.vmEphemeralPublicKey,
      ...attested,
      deny: (reason = "POLICY_DENIED") => {
        if (!settled) vetoed ??= reason;
      },
    };
    // Listeners are called as emit would, but their answers (sync or a promise) are awaited.
    const answers = await Promise.allSettled(this.listeners("keyRequest").map((l) => Promise.resolve().then(() => (l as (i: KeyRequestInfo) => unknown)(info))));
    for (const a of answers) {
      if (a.status === "rejected") vetoed ??= "POLICY_ERROR";
      else if (a.value === false) vetoed ??= "POLICY_DENIED";
    }
    if (vetoed === undefined && this.policy && !(await this.policy(info))) vetoed = "POLICY_DENIED";
    settled = true;
    if (vetoed !== undefined) return burn(vetoed);

    // The use is on disk before anything leaves; a concurrent request for the same OTK
    // finds it used (decisions are serialised, and recordUse refuses a second use).
    if (!(await this.ledger.recordUse(otkHex, { jobId: req.jobId, outcome: "released", atMs: Date.now() }))) return deny("OTK_REUSED");
    const sealed = seal(req.vmEphemeralPublicKey, dek, { info: dekReleaseInfo(req.jobId, otkDigest, req.codeSha256) });
    this.emit("released", { jobId: req.jobId, codeSha256: b.codeSha256, dekId: req.dekId });
    return { release: { jobId: req.jobId, requestSeq: req.requestSeq, enc: sealed.enc, sealedDek: sealed.ciphertext } };
  }

  async close(): Promise<void> {
    await this.decisions;
    for (const d of this.deks.values()) d.fill(0);
    this.deks.clear();
    await this.ledger.close();
  }
}
