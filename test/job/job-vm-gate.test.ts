// The job VM's side of the service is gated per job (seed 003, "a job reading outside its own
// data"): a runner — here a stand-in bridge on the job VM's own host, with that host's real key —
// that asks for another tenant's object is refused (PERMISSION_DENIED DATA_REFUSED) and its job
// fails; another host cannot act for the job at all; a user key cannot call JobVmService; a
// job VM that goes silent after the key release is failed and terminated at its wall clock.
import { generateKeyPairSync, type JsonWebKey } from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, importSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { encryptBytes } from "../../sdk/src/envelope/envelope-bytes.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { JobState } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { JobVmServiceService, type JobSpec } from "../../sdk/src/gen/trustplane/job/v1/job_vm.js";
import { encryptToStorage } from "../../sdk/src/job/encrypt-to-storage.js";
import { runJob } from "../../sdk/src/job/run-job.js";
import { buildJobModule } from "../../scripts/build-wasm-jobs.js";
import { attestJobVm } from "../../sdk/src/job/job-vm-attestation.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import { VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { JOB_RUNNER_IMAGE } from "../../server/src/job/bridge/job-bridge.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { readJsonSecretFile } from "../../server/src/runtime/key-file.js";
import type { GuestSupportProvider } from "../../server/src/vm/agent/driver.js";
import { controlPlaneFor } from "../../server/src/vm/agent/vm-agent-area.js";
import { startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;
let bob: JobUser;

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
  bob = await t.user("bob");
}, 30_000);
afterAll(async () => t?.stop());

function hostIdentity() {
  const stateDir = path.join(t.env.config.dataDir, "agent", DEV_HOST_ID);
  const key = importSigningKey(readJsonSecretFile<JsonWebKey>(path.join(stateDir, "host-signing.jwk.json")));
  const identity = readJsonSecretFile<{ hostCertificate: string }>(path.join(stateDir, "identity.json"));
  return { key, certificate: Buffer.from(identity.hostCertificate, "base64") };
}

function hostClient() {
  return createClient(JobVmServiceService, t.address, hostIdentity());
}

async function restoreBridge(): Promise<void> {
  const { jobAgentAreaBridgeFor } = await import("../../server/src/job/bridge/job-bridge-area.js");
  controlPlaneFor(DEV_HOST_ID)!.provideGuest(JOB_RUNNER_IMAGE, jobAgentAreaBridgeFor(DEV_HOST_ID)!);
}

describe("JobVmService serves a job only to its VM's host, and only the job's own input", () => {
  it("a runner asking for another tenant's object is refused and its job fails", async () => {
    const aliceSession = await alice.session();
    await encryptToStorage(aliceSession.storage, [Buffer.from("alice's private numbers")], { dek: alice.dek, dekId: alice.dekId, tenant: "alice", name: "private.txt" });
    const bobSession = await bob.session();
    await encryptToStorage(bobSession.storage, [Buffer.from("bob's own data")], { dek: bob.dek, dekId: bob.dekId, tenant: "bob", name: "mine.txt" });

    // A stand-in for the agent's bridge on the dev host: it learns its VM's job, then asks for
    // the wrong object, as a compromised runner would.
    const cp = controlPlaneFor(DEV_HOST_ID)!;
    const host = hostClient();
    let resolveAsk!: (p: Promise<unknown>) => void;
    const asked = new Promise<unknown>((r) => (resolveAsk = r));
    let spec: JobSpec | undefined;
    const rogue: GuestSupportProvider = {
      async prepare(vmSpec) {
        resolveAsk(
          (async () => {
            spec = (await host.getJobSpec({ vmId: vmSpec.vmId }, { deadlineMs: 30_000 })).spec!;
            for await (const _ of host.readJobInput({ jobId: spec.jobId, asked: { tenant: "alice", name: "private.txt", digest: "", size: 0 } })) void _;
          })(),
        );
        return { command: ["/bin/sh", "-c", "sleep 60"], memoryCgroup: true };
      },
      async released() {},
    };
    cp.provideGuest(JOB_RUNNER_IMAGE, rogue);
    try {
      const job = runJob(bobSession, await buildJobModule("byte-sum"), { stored: { tenant: "bob", name: "mine.txt" }, dekId: bob.dekId });
      await expect(asked).rejects.toMatchObject({ status: "PERMISSION_DENIED", reason: "DATA_REFUSED" });
      await expect(job).rejects.toMatchObject({ reason: "DATA_REFUSED" });
      const stored = (await bobSession.jobs.getJob({ jobId: spec!.jobId })).job!;
      expect(stored.state).toBe(JobState.JOB_STATE_FAILED);
      // The refusal is audited.
      expect(t.env.logs()).toContain(spec!.jobId);
    } finally {
      // Put the real bridge back (the agent area registered it at start).
      await restoreBridge();
      host.close();
    }
  }, 60_000);

  it("another host cannot act for the job, and a user key cannot call JobVmService", async () => {
    // A second, genuinely joined host.
    const auth = createClient(AuthServiceService, t.address, { key: t.env.admin });
    const { joinToken } = await auth.createJoinToken({ requestId: `jt-${Date.now()}`, hostId: "other-host", ttlSeconds: 60 });
    const otherKey = generateSigningKey("Ed25519");
    const sealing = generateKeyPairSync("x25519").publicKey.export({ format: "jwk" });
    const joinClient = createClient(AuthServiceService, t.address, { key: otherKey });
    const joined = await joinClient.joinHost({ requestId: `join-${Date.now()}`, joinToken, hostId: "other-host", signingJwk: JSON.stringify(otherKey.publicJwk), sealingJwk: JSON.stringify(sealing), address: "127.0.0.1:1" });
    joinClient.close();
    auth.close();
    const other = createClient(JobVmServiceService, t.address, { key: otherKey, certificate: SignedEnvelope.encode(joined.hostCertificate!).finish() });
    const session = await alice.session();
    let jobId = "";
    session.on("jobEvent", (e: { jobId: string }) => (jobId ||= e.jobId));
    const running = runJob(session, await buildJobModule("byte-sum"), { inline: await encryptBytes(Buffer.from("abc"), { dek: alice.dek, dekId: alice.dekId }), dekId: alice.dekId }, { resultMode: "returned" });
    while (!jobId) await new Promise((r) => setTimeout(r, 10));
    const read = async () => {
      for await (const _ of other.readJobInput({ jobId })) void _;
    };
    await expect(read()).rejects.toMatchObject({ status: "PERMISSION_DENIED", reason: "JOB_NOT_ON_HOST" });
    await expect(other.reportProgress({ jobId, progress: 0, detail: "x" })).rejects.toMatchObject({ reason: "JOB_NOT_ON_HOST" });
    // The VM of this job is on the dev host, not on other-host.
    const vmId = (await session.jobs.getJob({ jobId })).job!.vmId;
    await expect(other.getJobSpec({ vmId }, { deadlineMs: 5000 })).rejects.toMatchObject({ reason: "JOB_VM_NOT_ON_HOST" });
    other.close();
    // A user (even the job's owner) is not a host.
    const asUser = createClient(JobVmServiceService, t.address, { key: alice.key });
    await expect(asUser.reportProgress({ jobId, progress: 0, detail: "x" })).rejects.toMatchObject({ status: "PERMISSION_DENIED" });
    asUser.close();
    // The job itself is unharmed.
    expect(Buffer.from((await running).output).readBigUInt64LE(0)).toBe(BigInt(97 + 98 + 99));
  }, 60_000);

  it("a job VM that goes silent after the key release is failed and terminated at its wall clock + grace", async () => {
    const session = await alice.session();
    const host = hostClient();
    const { key, certificate } = hostIdentity();
    let vmId = "";
    const silent: GuestSupportProvider = {
      async prepare(vmSpec) {
        vmId = vmSpec.vmId;
        void (async () => {
          const spec = (await host.getJobSpec({ vmId }, { deadlineMs: 30_000 })).spec!;
          const eph = generateX25519KeyPair();
          const hostAttestation = attestJobVm(key, certificate, { jobId: spec.jobId, vmId, hostId: DEV_HOST_ID, codeSha256: spec.codeSha256, data: spec.stored, ephemeralPublicKey: eph.publicKey, otkSha256: spec.otkSha256, issuedAtMs: Date.now() });
          await host.requestDataKey({ jobId: spec.jobId, ephemeralPublicKey: eph.publicKey, codeSha256: spec.codeSha256, hostAttestation });
          // ...and then nothing: no progress, no result.
        })().catch(() => undefined);
        return { command: ["/bin/sh", "-c", "sleep 120"], memoryCgroup: true };
      },
      async released() {},
    };
    controlPlaneFor(DEV_HOST_ID)!.provideGuest(JOB_RUNNER_IMAGE, silent);
    const vms = createClient(VmServiceService, t.address, { key: t.env.admin });
    try {
      const started = Date.now();
      await expect(
        runJob(session, await buildJobModule("byte-sum"), { inline: await encryptBytes(Buffer.from("x"), { dek: alice.dek, dekId: alice.dekId }), dekId: alice.dekId }, { limits: { wallClockMs: 1000 }, resultMode: "returned" }),
      ).rejects.toMatchObject({ reason: "WALL_CLOCK_EXCEEDED" });
      expect(Date.now() - started).toBeGreaterThanOrEqual(11_000);
      for (let i = 0; i < 100 && (await vms.getVm({ vmId })).vm!.state !== VmState.VM_STATE_TERMINATED; i++) await new Promise((r) => setTimeout(r, 100));
      expect((await vms.getVm({ vmId })).vm!.state).toBe(VmState.VM_STATE_TERMINATED);
    } finally {
      await restoreBridge();
      host.close();
      vms.close();
    }
  }, 60_000);
});
