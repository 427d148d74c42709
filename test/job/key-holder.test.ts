// The key holder's one-time-job-key rule (seed 003): a DEK is released at most once per OTK —
// under concurrent requests and across a restart (ledger reloaded from disk) — only for the
// binding the OTK was issued for, only for a VM key its host attested under a pinned CA, only
// after the policy and every (async) listener agreed, and sealed to the VM's key.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateSigningKey, issueCertificate, type SigningKey } from "../../sdk/src/auth/index.js";
import { open } from "../../sdk/src/envelope/hpke.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { attestJobVm } from "../../sdk/src/job/job-vm-attestation.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import type { KeyRequest } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { dekReleaseInfo, sha256 } from "../../sdk/src/job/job-bindings.js";
import { KeyHolder } from "../../sdk/src/job/key-holder.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const ca = generateSigningKey("Ed25519");
const hostKey = generateSigningKey("Ed25519");

function certificateFor(key: SigningKey, by: SigningKey, principal = "host:h1", hostPattern = "h1"): Uint8Array {
  const now = Date.now();
  return SignedEnvelope.encode(issueCertificate(by, { principal, publicKeyJwk: JSON.stringify(key.publicJwk), hostPattern, notBeforeMs: now - 60_000, notAfterMs: now + 3600_000 })).finish();
}
const hostCertificate = certificateFor(hostKey, ca);

async function holder(ledgerPath?: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-"));
  dirs.push(dir);
  const h = await KeyHolder.open({ ledgerPath: ledgerPath ?? path.join(dir, "ledger.jsonl"), caKeys: [ca.publicJwk] });
  return h;
}

const code = sha256(Buffer.from("module bytes"));
const dek = randomBytes(32);
const data = { tenant: "alice", name: "d.csv" };

/** A key request as the service forwards it, with the host's attestation of `vmKey`. */
function request(otk: Uint8Array, vmKey: Uint8Array, jobId = "job_1", seq = 1, attest: { key?: SigningKey; certificate?: Uint8Array; vmKey?: Uint8Array } = {}): KeyRequest {
  const ref = { ...data, digest: "", size: 0 };
  const hostAttestation = attestJobVm(attest.key ?? hostKey, attest.certificate ?? hostCertificate, {
    jobId,
    vmId: "vm-1",
    hostId: "h1",
    codeSha256: code,
    data: ref,
    ephemeralPublicKey: attest.vmKey ?? vmKey,
    otkSha256: sha256(otk),
    issuedAtMs: Date.now(),
  });
  return { jobId, otk, vmEphemeralPublicKey: vmKey, codeSha256: code, data: ref, dekId: "d1", requestSeq: seq, hostAttestation };
}

describe("KeyHolder", () => {
  it("releases the DEK sealed to the VM key with info binding job, OTK digest and code digest", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    const vm = generateX25519KeyPair();
    const a = await h.handleKeyRequest(request(otk, vm.publicKey));
    expect(a.release).toBeDefined();
    const opened = open(vm.privateKey, a.release!.enc, a.release!.sealedDek, { info: dekReleaseInfo("job_1", sha256(otk), code) });
    expect(Buffer.from(opened).equals(dek)).toBe(true);
    // Another job id in the info does not open it: the release is bound to this job.
    expect(() => open(vm.privateKey, a.release!.enc, a.release!.sealedDek, { info: dekReleaseInfo("job_2", sha256(otk), code) })).toThrow();
    // The ledger file holds the OTK's digest, never the OTK or the DEK.
    const text = readFileSync((h.ledger as unknown as { file: string }).file, "utf8");
    expect(text).toContain(sha256(otk).toString("hex"));
    expect(text).not.toContain(Buffer.from(otk).toString("hex"));
    expect(text).not.toContain(dek.toString("hex"));
    expect(text).not.toContain(dek.toString("base64"));
    await h.close();
  });

  it("releases once for two concurrent requests with the same OTK", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    const answers = await Promise.all([
      h.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey, "job_1", 1)),
      h.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey, "job_1", 2)),
    ]);
    expect(answers.filter((a) => a.release).length).toBe(1);
    expect(answers.find((a) => a.denied)?.denied?.reason).toBe("OTK_REUSED");
    await h.close();
  });

  it("refuses a used OTK after a restart (the ledger is reloaded from disk)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-"));
    dirs.push(dir);
    const ledgerPath = path.join(dir, "ledger.jsonl");
    const first = await KeyHolder.open({ ledgerPath, caKeys: [ca.publicJwk] });
    first.addDek("d1", dek);
    const otk = await first.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await first.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await first.close();

    const second = await KeyHolder.open({ ledgerPath, caKeys: [ca.publicJwk] });
    second.addDek("d1", dek);
    const again = await second.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey, "job_1", 2));
    expect(again.release).toBeUndefined();
    expect(again.denied?.reason).toBe("OTK_REUSED");
    // An OTK issued before the restart and never used still works once.
    await second.close();
  });

  it("a ledger is held by one key holder at a time", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-"));
    dirs.push(dir);
    const ledgerPath = path.join(dir, "ledger.jsonl");
    const first = await KeyHolder.open({ ledgerPath });
    await expect(KeyHolder.open({ ledgerPath })).rejects.toMatchObject({ reason: "OTK_LEDGER_LOCKED" });
    await first.close();
    const again = await KeyHolder.open({ ledgerPath });
    await again.close();
  });

  it("refuses unknown OTKs and OTKs presented for other code, DEK or data (and burns them)", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    expect((await h.handleKeyRequest(request(randomBytes(32), generateX25519KeyPair().publicKey))).denied?.reason).toBe("OTK_UNKNOWN");
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    const other = { ...request(otk, generateX25519KeyPair().publicKey), codeSha256: sha256(Buffer.from("other module")) };
    expect((await h.handleKeyRequest(other)).denied?.reason).toBe("OTK_BINDING_MISMATCH");
    expect((await h.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey))).denied?.reason).toBe("OTK_REUSED");
    const otk2 = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    const otherData = { ...request(otk2, generateX25519KeyPair().publicKey), data: { tenant: "bob", name: "d.csv", digest: "", size: 0 } };
    expect((await h.handleKeyRequest(otherData)).denied?.reason).toBe("OTK_BINDING_MISMATCH");
    await h.close();
  });

  it("lets the application veto by code digest through the keyRequest event and a policy", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    const allowed = code.toString("hex");
    h.on("keyRequest", (r: { codeSha256: string; deny(reason?: string): void }) => {
      if (r.codeSha256 !== allowed) r.deny("CODE_NOT_APPROVED");
    });
    const bad = sha256(Buffer.from("unapproved module"));
    const otk = await h.issueOtk({ codeSha256: bad, dekId: "d1", data });
    const vm = generateX25519KeyPair().publicKey;
    const req = request(otk, vm);
    const att = attestJobVm(hostKey, hostCertificate, { jobId: "job_1", vmId: "vm-1", hostId: "h1", codeSha256: bad, data: req.data, ephemeralPublicKey: vm, otkSha256: sha256(otk), issuedAtMs: Date.now() });
    const a = await h.handleKeyRequest({ ...req, codeSha256: bad, hostAttestation: att });
    expect(a.denied?.reason).toBe("CODE_NOT_APPROVED");
    const ok = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(ok, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await h.close();

    const strict = await KeyHolder.open({ ledgerPath: path.join(dirs[dirs.length - 1]!, "strict.jsonl"), policy: () => false, caKeys: [ca.publicJwk] });
    strict.addDek("d1", dek);
    const otk3 = await strict.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await strict.handleKeyRequest(request(otk3, generateX25519KeyPair().publicKey))).denied?.reason).toBe("POLICY_DENIED");
    await strict.close();
  });

  it("an async keyRequest listener's decision is awaited: a late deny() or a false answer refuses", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    let mode: "late-deny" | "false" | "approve" = "late-deny";
    h.on("keyRequest", async (r: { deny(reason?: string): void }) => {
      await new Promise((res) => setTimeout(res, 20));
      if (mode === "late-deny") r.deny("ASKED_A_HUMAN");
      else if (mode === "false") return false;
      return true;
    });
    const otk1 = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(otk1, generateX25519KeyPair().publicKey))).denied?.reason).toBe("ASKED_A_HUMAN");
    mode = "false";
    const otk2 = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(otk2, generateX25519KeyPair().publicKey))).denied?.reason).toBe("POLICY_DENIED");
    mode = "approve";
    const otk3 = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(otk3, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await h.close();
  });
});

describe("KeyHolder: the job VM's key must be attested by its host under a pinned CA", () => {
  it("refuses a key request whose ephemeral key was swapped (the attestation names another key)", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    const vm = generateX25519KeyPair();
    const attacker = generateX25519KeyPair();
    // The host attested the VM's key; someone on the way put their own key in the request.
    const swapped = request(otk, attacker.publicKey, "job_1", 1, { vmKey: vm.publicKey });
    const a = await h.handleKeyRequest(swapped);
    expect(a.denied?.reason).toBe("ATTESTATION_MISMATCH");
    expect(a.release).toBeUndefined();
    // The OTK is burnt: the genuine request afterwards is refused too.
    expect((await h.handleKeyRequest(request(otk, vm.publicKey))).denied?.reason).toBe("OTK_REUSED");
    await h.close();
  });

  it("refuses attestations by an uncertified key, by a key certified by another CA, for a non-host, or none at all", async () => {
    const h = await holder();
    h.addDek("d1", dek);
    const rogueCa = generateSigningKey("Ed25519");
    const rogueHost = generateSigningKey("Ed25519");
    const cases: [string, (otk: Uint8Array, vm: Uint8Array) => KeyRequest][] = [
      ["ATTESTATION_INVALID", (otk, vm) => request(otk, vm, "job_1", 1, { key: rogueHost, certificate: certificateFor(rogueHost, rogueCa) })],
      ["ATTESTATION_INVALID", (otk, vm) => request(otk, vm, "job_1", 1, { key: rogueHost })],
      ["ATTESTATION_INVALID", (otk, vm) => request(otk, vm, "job_1", 1, { key: rogueHost, certificate: certificateFor(rogueHost, ca, "user:h1", "h1") })],
      ["ATTESTATION_MISSING", (otk, vm) => ({ ...request(otk, vm), hostAttestation: undefined })],
      ["ATTESTATION_MISMATCH", (otk, vm) => ({ ...request(otk, vm, "job_other"), jobId: "job_1" })],
    ];
    for (const [reason, make] of cases) {
      const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
      const a = await h.handleKeyRequest(make(otk, generateX25519KeyPair().publicKey));
      expect(a.denied?.reason, reason).toBe(reason);
    }
    // The genuine attestation is accepted (the refusals above are the checks).
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await h.close();
  });

  it("with no CA pinned, nothing is released", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-"));
    dirs.push(dir);
    const h = await KeyHolder.open({ ledgerPath: path.join(dir, "l.jsonl") });
    h.addDek("d1", dek);
    const otk = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey))).denied?.reason).toBe("ATTESTATION_UNVERIFIABLE");
    await h.close();
  });
});
