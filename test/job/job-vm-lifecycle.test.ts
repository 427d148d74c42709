// Job VMs are VMs of the VM area (seed 003 step 3): scheduled with a claim on a host's CPU and
// memory (the admission control), run on the sandbox driver under the agent, seeing only the
// system, the runner bundle and their own host channel, and terminated — no process, socket,
// cgroup or file left — when their job ends, fails or times out.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../sdk/src/client/create-client.js";
import { encryptBytes } from "../../sdk/src/envelope/envelope-bytes.js";
import { JobState } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { HypervisorType, VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { runJob } from "../../sdk/src/job/run-job.js";
import { buildJobModule, compileWat } from "../../scripts/build-wasm-jobs.js";
import { DEV_HOST_ID } from "../../server/src/processes/dev-process.js";
import { startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;
let byteSum: Uint8Array;
let vms: ReturnType<typeof createClient<typeof VmServiceService>>;

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
  byteSum = await buildJobModule("byte-sum");
  vms = createClient(VmServiceService, t.address, { key: t.env.admin });
}, 30_000);
afterAll(async () => {
  vms?.close();
  await t?.stop();
});

const vmDir = (vmId: string) => path.join(t.env.config.dataDir, "agent", DEV_HOST_ID, "vms", vmId);

function processesOf(vmId: string): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(vmId);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Waits until nothing of the VM is left: record TERMINATED, no directory, process or cgroup. */
async function expectGone(vmId: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const vm = (await vms.getVm({ vmId })).vm!;
    const left = { state: VmState[vm.state], dir: existsSync(vmDir(vmId)), processes: processesOf(vmId).length, cgroup: existsSync(`/sys/fs/cgroup/memory/trustplane-vms/${vmId}`) };
    if (vm.state === VmState.VM_STATE_TERMINATED && !left.dir && left.processes === 0 && !left.cgroup) return;
    if (Date.now() > deadline) expect(left).toEqual({ state: "VM_STATE_TERMINATED", dir: false, processes: 0, cgroup: false });
    await new Promise((r) => setTimeout(r, 100));
  }
}

const inline = (u: JobUser, text = "some input") => encryptBytes(Buffer.from(text), { dek: u.dek, dekId: u.dekId });

describe("a job VM is a VM from the VM area", () => {
  it("is scheduled on the dev host's sandbox driver with a claim sized for the job, and is terminated when the job succeeds", async () => {
    const session = await alice.session();
    const { job, output } = await runJob(session, byteSum, { inline: await inline(alice), dekId: alice.dekId }, { resultMode: "returned", limits: { memoryBytes: 64 * 1024 * 1024 } });
    expect(Buffer.from(output).readBigUInt64LE(0)).toBe(BigInt([...Buffer.from("some input")].reduce((a, b) => a + b, 0)));
    expect(job.vmId).toMatch(/^vm-/);
    const vm = (await vms.getVm({ vmId: job.vmId })).vm!;
    expect(vm.image).toBe("job-runner");
    expect(vm.hypervisor).toBe(HypervisorType.HYPERVISOR_TYPE_SANDBOX);
    expect(vm.hostId).toBe(DEV_HOST_ID);
    expect(vm.resources).toMatchObject({ vcpus: 1, memoryMib: 64 + 256 });
    await expectGone(job.vmId);
  }, 60_000);

  it("is terminated when its job fails (a trap) and when it outlives its wall clock", async () => {
    const session = await alice.session();
    const trap = await compileWat(`(module (import "env" "memory" (memory 1))
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "feed") (param i32 i32) unreachable)
      (func (export "finish") (result i64) (i64.const 0)))`);
    const loop = await compileWat(`(module (import "env" "memory" (memory 1))
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "feed") (param i32 i32) (loop $l (br $l)))
      (func (export "finish") (result i64) (i64.const 0)))`);
    const ids: string[] = [];
    session.on("jobEvent", (e: { jobId: string }) => ids.includes(e.jobId) || ids.push(e.jobId));
    await expect(runJob(session, trap, { inline: await inline(alice), dekId: alice.dekId })).rejects.toMatchObject({ reason: "MODULE_TRAPPED" });
    await expect(runJob(session, loop, { inline: await inline(alice), dekId: alice.dekId }, { limits: { wallClockMs: 1000 } })).rejects.toMatchObject({ reason: "WALL_CLOCK_EXCEEDED" });
    for (const jobId of ids) await expectGone((await session.jobs.getJob({ jobId })).job!.vmId);
  }, 60_000);

  it("CreateJobVm makes a VM the next SubmitJob runs on, once", async () => {
    const session = await alice.session();
    const { jobVm } = await session.jobs.createJobVm({ requestId: `jvm-${Date.now()}`, sessionId: session.id, limits: { memoryBytes: 32 * 1024 * 1024, wallClockMs: 0 } });
    expect(jobVm!.vmId).toMatch(/^vm-/);
    const { job } = await runJob(session, byteSum, { inline: await inline(alice), dekId: alice.dekId }, { resultMode: "returned", jobVmId: jobVm!.jobVmId, limits: { memoryBytes: 32 * 1024 * 1024 } });
    expect(job.vmId).toBe(jobVm!.vmId);
    await expect(runJob(session, byteSum, { inline: await inline(alice), dekId: alice.dekId }, { jobVmId: jobVm!.jobVmId })).rejects.toMatchObject({ reason: "JOB_VM_NOT_FOUND" });
    await expectGone(job.vmId);
  }, 60_000);

  it("an unused job VM is terminated when its session closes", async () => {
    const session = await alice.session();
    const { jobVm } = await session.jobs.createJobVm({ requestId: `jvm-close-${Date.now()}`, sessionId: session.id, limits: { memoryBytes: 16 * 1024 * 1024, wallClockMs: 0 } });
    for (let i = 0; i < 100 && (await vms.getVm({ vmId: jobVm!.vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 100));
    session.close();
    await expectGone(jobVm!.vmId);
  }, 60_000);

  it("a job asking for the QEMU driver is UNIMPLEMENTED naming the driver (it has no host channel)", async () => {
    const session = await alice.session();
    const code = byteSum;
    const submit = session.jobs.submitJob({
      requestId: `q-${Date.now()}`,
      sessionId: session.id,
      code,
      codeSha256: createHash("sha256").update(code).digest(),
      otk: new Uint8Array(32).fill(1),
      inlineCiphertext: await inline(alice),
      dekId: alice.dekId,
      hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU,
    });
    await expect(submit).rejects.toMatchObject({ status: "UNIMPLEMENTED", reason: "DRIVER_UNSUPPORTED", message: expect.stringContaining("qemu") });
  });
});

describe("admission: job VMs claim the host's capacity", () => {
  it("refuses job VMs with RESOURCE_EXHAUSTED once the host's CPU and memory are claimed", async () => {
    const session = await alice.session();
    const made: string[] = [];
    let refusal: unknown;
    // 2 GiB jobs claim 2.25 GiB and a vCPU each: a 2-core dev host (CPU ratio 4) takes 8 at most.
    for (let i = 0; i < 40 && !refusal; i++) {
      try {
        const { jobVm } = await session.jobs.createJobVm({ requestId: `adm-${i}-${Date.now()}`, sessionId: session.id, limits: { memoryBytes: 2 * 1024 ** 3, wallClockMs: 0 } });
        made.push(jobVm!.vmId);
      } catch (e) {
        refusal = e;
      }
    }
    expect(refusal).toMatchObject({ status: "RESOURCE_EXHAUSTED" });
    expect(made.length).toBeGreaterThan(0);
    expect(made.length).toBeLessThan(40);
    for (const vmId of made) await vms.terminateVm({ requestId: `t-${vmId}`, vmId }).catch(() => undefined);
    for (const vmId of made) await expectGone(vmId);
  }, 120_000);
});

describe("job VMs do not outlive their agent's job bridge", () => {
  it("stopping the dev server and agent leaves no job VM process, cgroup or directory", async () => {
    const own = await startJobTestEnv();
    try {
      const bob = await own.user("bob");
      const session = await bob.session();
      const { jobVm } = await session.jobs.createJobVm({ requestId: `jvm-stop-${Date.now()}`, sessionId: session.id, limits: { memoryBytes: 16 * 1024 * 1024, wallClockMs: 0 } });
      const vmId = jobVm!.vmId;
      const admin = createClient(VmServiceService, own.address, { key: own.env.admin });
      for (let i = 0; i < 100 && (await admin.getVm({ vmId })).vm!.state !== VmState.VM_STATE_RUNNING; i++) await new Promise((r) => setTimeout(r, 100));
      admin.close();
      expect(processesOf(vmId).length).toBeGreaterThan(0);
      await own.env.dev.shutdown();
      expect(processesOf(vmId)).toEqual([]);
      expect(existsSync(`/sys/fs/cgroup/memory/trustplane-vms/${vmId}`)).toBe(false);
      expect(existsSync(path.join(own.env.config.dataDir, "agent", DEV_HOST_ID, "vms", vmId))).toBe(false);
    } finally {
      await own.stop().catch(() => undefined);
    }
  }, 60_000);
});

describe("no host with the sandbox driver (no bubblewrap)", () => {
  it("a job is refused with FAILED_PRECONDITION naming what to install, never run unconfined", async () => {
    const saved = process.env.TRUSTPLANE_VM_DRIVERS;
    // The agent's drivers are read at its start: this one offers none (as without bubblewrap).
    process.env.TRUSTPLANE_VM_DRIVERS = "none";
    const own = await startJobTestEnv().finally(() => (saved === undefined ? delete process.env.TRUSTPLANE_VM_DRIVERS : (process.env.TRUSTPLANE_VM_DRIVERS = saved)));
    try {
      const carol = await own.user("carol");
      const session = await carol.session();
      // The host registers (without drivers) shortly after the agent starts.
      const admin = createClient(VmServiceService, own.address, { key: own.env.admin });
      for (let i = 0; i < 100 && (await admin.getCapabilities({})).hosts.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      admin.close();
      await expect(runJob(session, byteSum, { inline: await inline(carol), dekId: carol.dekId })).rejects.toMatchObject({ status: "FAILED_PRECONDITION", reason: "NO_JOB_VM_DRIVER", message: expect.stringContaining("bubblewrap") });
    } finally {
      await own.stop();
    }
  }, 60_000);
});
