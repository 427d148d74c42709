// read_guest_memory on a real QEMU guest, end to end: a tiny-linux VM scheduled through
// VmService onto the agent's QEMU driver, then an operator certified for `memory` reads a
// range of guest physical memory through QMP pmemsave; the bytes come back host-signed and
// sealed to the operator. A `lifecycle`-only operator is refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { PrivilegedServiceService } from "../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { HypervisorType, VmServiceService, VmState } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { importVerificationKey } from "../../sdk/src/auth/index.js";
import { buildPrivilegedRequest, openSealedResult, signPrivilegedRequest } from "../../sdk/src/privileged/index.js";
import { qemuAvailable } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

const HOST = "dev-host-1";
let env: DevEnv;
let vmId = "";

async function operator(name: string, classes: string[]): Promise<{ key: SigningKey; cert: Uint8Array }> {
  const auth = createClient(AuthServiceService, env.dev.server.address, { key: env.admin });
  try {
    await auth.createPrincipal({ requestId: `p-${name}`, name, kind: "user" });
    const key = generateSigningKey();
    const { certificate } = await auth.issueCertificate({ requestId: `c-${name}`, principal: name, publicKeyJwk: JSON.stringify(key.publicJwk), operationClasses: classes, hostPattern: HOST, ttlSeconds: 600 });
    return { key, cert: SignedEnvelope.encode(certificate!).finish() };
  } finally {
    auth.close();
  }
}

describe.skipIf(!qemuAvailable())("privileged guest memory on QEMU", () => {
  beforeAll(async () => {
    process.env.TRUSTPLANE_VM_DRIVERS = "sandbox,qemu";
    env = await startDevEnv();
    const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
    const { vm } = await vms.createVm({ requestId: "mem-vm", name: "evidence", image: "tiny-linux", resources: { vcpus: 1, memoryMib: 128, diskGib: 0 } });
    vmId = vm!.vmId;
    expect(vm!.hypervisor).toBe(HypervisorType.HYPERVISOR_TYPE_QEMU);
    for (let i = 0; i < 900; i++) {
      const cur = (await vms.getVm({ vmId })).vm!;
      if (cur.state === VmState.VM_STATE_RUNNING) break;
      if (cur.state === VmState.VM_STATE_FAILED) throw new Error(cur.failureReason);
      await new Promise((r) => setTimeout(r, 100));
    }
    vms.close();
  }, 150_000);

  afterAll(async () => {
    delete process.env.TRUSTPLANE_VM_DRIVERS;
    if (env) {
      const vms = createClient(VmServiceService, env.dev.server.address, { key: env.admin });
      await vms.terminateVm({ requestId: "mem-vm-term", vmId }).catch(() => undefined);
      vms.close();
      await env.stop();
    }
  }, 60_000);

  it("reads guest physical memory through QMP, sealed to the memory-certified operator", async () => {
    const security = await operator("security", ["memory"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0xf0000, length: 4096 } }, recipientPublicKey: me.publicKey });
    const envelope = signPrivilegedRequest(req, security.key, security.cert);
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: security.key, certificate: security.cert, targetHost: HOST });
    const { result } = await agent.submit({ requestId: req.requestId, envelope });
    agent.close();
    const opened = openSealedResult({ sealed: result!, recipientPrivateKey: me.privateKey, requestEnvelope: SignedEnvelope.encode(envelope).finish(), hostKey: importVerificationKey(env.dev.agent.signingKey.publicJwk), hostId: HOST, requestId: req.requestId });
    expect(opened.data.length).toBe(4096);
    // The BIOS lives at 0xF0000: real guest memory is not all zeros.
    expect(opened.data.some((b) => b !== 0)).toBe(true);
  });

  it("refuses a memory read to an operator certified only for lifecycle", async () => {
    const support = await operator("support", ["lifecycle"]);
    const me = generateX25519KeyPair();
    const req = buildPrivilegedRequest({ hostId: HOST, operation: { readGuestMemory: { vmId, address: 0, length: 16 } }, recipientPublicKey: me.publicKey });
    const agent = createClient(PrivilegedServiceService, env.dev.agent.address, { key: support.key, certificate: support.cert, targetHost: HOST });
    try {
      await agent.submit({ requestId: req.requestId, envelope: signPrivilegedRequest(req, support.key, support.cert) });
      throw new Error("unexpectedly succeeded");
    } catch (e) {
      expect(e).toBeInstanceOf(TrustplaneError);
      expect([(e as TrustplaneError).status, (e as TrustplaneError).reason]).toEqual(["PERMISSION_DENIED", "POLICY_DENIED"]);
    } finally {
      agent.close();
    }
  });
});
