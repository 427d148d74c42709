// The key holder's one-time-job-key rule (seed 003): a DEK is released at most once per OTK —
// under concurrent requests and across a restart (ledger reloaded from disk) — only for the
// binding the OTK was issued for, only after the policy agreed, and sealed to the VM's key.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { open } from "../../sdk/src/envelope/hpke.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import type { KeyRequest } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { dekReleaseInfo, sha256 } from "../../sdk/src/job/job-bindings.js";
import { KeyHolder } from "../../sdk/src/job/key-holder.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function holder(ledgerPath?: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-"));
  dirs.push(dir);
  const h = await KeyHolder.open({ ledgerPath: ledgerPath ?? path.join(dir, "ledger.jsonl") });
  return h;
}

const code = sha256(Buffer.from("module bytes"));
const dek = randomBytes(32);
const data = { tenant: "alice", name: "d.csv" };

function request(otk: Uint8Array, vmKey: Uint8Array, jobId = "job_1", seq = 1): KeyRequest {
  return { jobId, otk, vmEphemeralPublicKey: vmKey, codeSha256: code, data: { ...data, digest: "", size: 0 }, dekId: "d1", requestSeq: seq };
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
    const first = await KeyHolder.open({ ledgerPath });
    first.addDek("d1", dek);
    const otk = await first.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await first.handleKeyRequest(request(otk, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await first.close();

    const second = await KeyHolder.open({ ledgerPath });
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
    const a = await h.handleKeyRequest({ ...request(otk, generateX25519KeyPair().publicKey), codeSha256: bad });
    expect(a.denied?.reason).toBe("CODE_NOT_APPROVED");
    const ok = await h.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await h.handleKeyRequest(request(ok, generateX25519KeyPair().publicKey))).release).toBeDefined();
    await h.close();

    const strict = await KeyHolder.open({ ledgerPath: path.join(dirs[dirs.length - 1]!, "strict.jsonl"), policy: () => false });
    strict.addDek("d1", dek);
    const otk3 = await strict.issueOtk({ codeSha256: code, dekId: "d1", data });
    expect((await strict.handleKeyRequest(request(otk3, generateX25519KeyPair().publicKey))).denied?.reason).toBe("POLICY_DENIED");
    await strict.close();
  });
});
