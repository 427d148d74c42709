// The OTK ledger across a crash (seed 003: "DEK released twice for one OTK ... across a client
// restart"): a key holder process killed right after the ledger recorded the use, before it
// answered, leaves the OTK spent — the next key holder on that ledger refuses it.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { generateSigningKey, issueCertificate } from "../../sdk/src/auth/index.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { KeyRequest } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { sha256 } from "../../sdk/src/job/job-bindings.js";
import { attestJobVm } from "../../sdk/src/job/job-vm-attestation.js";
import { KeyHolder } from "../../sdk/src/job/key-holder.js";

const run = promisify(execFile);
const FIXTURE = fileURLToPath(new URL("./fixtures/crashing-key-holder.ts", import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), "tp-kh-crash-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a key holder killed between the ledger write and its answer", () => {
  it("leaves the OTK spent: the restarted key holder refuses a second release", async () => {
    const ca = generateSigningKey("Ed25519");
    const host = generateSigningKey("Ed25519");
    const now = Date.now();
    const cert = SignedEnvelope.encode(issueCertificate(ca, { principal: "host:h1", publicKeyJwk: JSON.stringify(host.publicJwk), hostPattern: "h1", notBeforeMs: now - 60_000, notAfterMs: now + 3600_000 })).finish();
    const ledgerPath = path.join(dir, "ledger.jsonl");
    const dek = randomBytes(32);
    const code = sha256(Buffer.from("module"));
    const data = { tenant: "alice", name: "d.csv" };

    // Issue the OTK, then hand the ledger over (one key holder per ledger at a time).
    const first = await KeyHolder.open({ ledgerPath, caKeys: [ca.publicJwk] });
    first.addDek("d1", dek);
    const otk = await first.issueOtk({ codeSha256: code, dekId: "d1", data });
    await first.close();

    const request = (jobId: string) => {
      const vm = generateX25519KeyPair();
      const ref = { ...data, digest: "", size: 0 };
      const hostAttestation = attestJobVm(host, cert, { jobId, vmId: "vm-1", hostId: "h1", codeSha256: code, data: ref, ephemeralPublicKey: vm.publicKey, otkSha256: sha256(otk), issuedAtMs: Date.now() });
      return KeyRequest.fromPartial({ jobId, otk, vmEphemeralPublicKey: vm.publicKey, codeSha256: code, data: ref, dekId: "d1", requestSeq: 1, hostAttestation });
    };
    const crashed = await run(process.execPath, ["--import", "tsx", FIXTURE, ledgerPath, JSON.stringify(KeyRequest.toJSON(request("job_1"))), JSON.stringify(ca.publicJwk), dek.toString("base64")]).then(
      (r) => ({ signal: null as string | null, stdout: r.stdout }),
      (e: { signal: string; stdout: string }) => ({ signal: e.signal, stdout: e.stdout }),
    );
    // It died by SIGKILL without answering.
    expect(crashed).toEqual({ signal: "SIGKILL", stdout: "" });

    // The restarted key holder (its predecessor's lock is stale) finds the use on disk.
    const restarted = await KeyHolder.open({ ledgerPath, caKeys: [ca.publicJwk] });
    restarted.addDek("d1", dek);
    const again = await restarted.handleKeyRequest(request("job_2"));
    expect(again.release).toBeUndefined();
    expect(again.denied?.reason).toBe("OTK_REUSED");
    await restarted.close();
  }, 60_000);
});
