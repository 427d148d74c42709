// VmService on the server: the one VM command set (seed 004). Validates at the edge, asks the
// placement (scheduler) for a host and hypervisor, records the VM, drives the host's control
// plane over HostControlService, and publishes every change as an event. Every change goes
// through VmRecordChanges: the state machine and a revision compare-and-set on the record.
import { randomBytes } from "node:crypto";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import {
  CreateVmRequest,
  Feature,
  SetVmServiceAccountsRequest,
  HypervisorType,
  VmEventType,
  VmState,
  type HostControlServiceService,
  type Instance,
  type InstanceSpec,
  type ServiceAccountGrant,
  type Vm,
  type VmServiceService,
} from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { SignedClient } from "../../../../sdk/src/client/create-client.js";
import { KEY_ID_METADATA, SIGNATURE_METADATA, STATEMENT_METADATA, canonicalEncode } from "../../../../sdk/src/auth/index.js";
import type { CallContext, Handlers } from "../../runtime/auth/service-binder.js";
import type { Logger } from "../../runtime/logger.js";
import type { Storage } from "../../runtime/storage/storage.js";
import { HOST_DOWN } from "./instance-reconciler.js";
import type { Placement, PlacementRequest } from "./placement.js";
import { checkNetwork, describeForwards } from "./network-spec.js";
import { IMAGES, imageInfo } from "./vm-images.js";
import type { VmEventHub } from "./vm-event-hub.js";
import type { VmRepository } from "./vm-repository.js";
import { VmRecordChanges, type VmPatch } from "./vm-record-changes.js";
import { assertTransition, stateName } from "./vm-state-machine.js";

export type HostControlClient = SignedClient<typeof HostControlServiceService>;

export interface VmServiceDeps {
  storage: Storage;
  repo: VmRepository;
  placement: Placement;
  events: VmEventHub;
  /** A signed client for a host's control plane. */
  hostControl(hostId: string): Promise<HostControlClient>;
  logger: Logger;
  /** May `principal` launch VMs with service account `email`? (token area; default: only admins). */
  canActAs?(principal: string, email: string): Promise<boolean>;
  now?: () => number;
  /** Shared with the host-event reconciler; default: one over repo and events. */
  changes?: VmRecordChanges;
  /** Default graceful stop window. */
  stopTimeoutSeconds?: number;
  /**
   * Gets long-term tokens for a VM's service accounts from the token authority, with the
   * user's own signed CreateVm call as proof, and hands them to the VM's authorization
   * process on its host. Absent: VMs run without service accounts.
   */
  attachServiceAccounts?(vm: Vm, proof: UserProof): Promise<void>;
  /**
   * Moves a live VM's accounts from `vm.serviceAccounts` to `next` (token area): new pairs
   * with the user's own signed SetVmServiceAccounts call as proof, dropped pairs released.
   * Throws without changing anything on the host when the change cannot be made.
   */
  changeServiceAccounts?(vm: Vm, next: ServiceAccountGrant[], proof: UserProof, requestId: string): Promise<void>;
  /** The VM is gone: release its long-term token holds (the authority revokes after the last VM). */
  releaseServiceAccounts?(vm: Vm, requestId: string): Promise<void>;
  /**
   * Is the host up (heartbeating)? Read from storage, not a cache. Lets a VM whose host went
   * down be terminated in the record alone; absent: every terminate goes through the host.
   */
  hostUp?(hostId: string): Promise<boolean>;
}

/** The user's signed call, as received, for the token authority to check independently. */
export interface UserProof {
  statement: Uint8Array;
  signature: Uint8Array;
  keyId: string;
  /** The exact request bytes the statement's digest covers. */
  body: Uint8Array;
}

const LIMITS = { vcpus: 64, memoryMib: 1024 * 1024, diskGib: 16 * 1024 };
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const VOLUME_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * Volumes named at create are hot-plugged once the guest runs, so they need block hotplug: the
 * hypervisor choice and the scheduler see it as a required feature, and a create with volumes
 * on a hypervisor without it is refused at the edge instead of failing later on the host.
 */
function placementFeatures(required: Feature[], hasVolumes: boolean): Feature[] {
  return hasVolumes && !required.includes(Feature.FEATURE_BLOCK_HOTPLUG) ? [...required, Feature.FEATURE_BLOCK_HOTPLUG] : required;
}

function isAdmin(ctx: CallContext): boolean {
  return ctx.caller.roles.includes("admin");
}

function notFound(vmId: string): TrustplaneError {
  return new TrustplaneError("NOT_FOUND", "VM_NOT_FOUND", `no VM ${JSON.stringify(vmId)} (or it is not yours)`, "vm_id");
}

/** The caller's signed call as received (statement, signature, key) plus its canonical bytes. */
function userProof(ctx: CallContext, req: CreateVmRequest): UserProof | undefined;
function userProof(ctx: CallContext, req: SetVmServiceAccountsRequest, type: typeof SetVmServiceAccountsRequest): UserProof | undefined;
function userProof(ctx: CallContext, req: CreateVmRequest | SetVmServiceAccountsRequest, type: typeof CreateVmRequest | typeof SetVmServiceAccountsRequest = CreateVmRequest): UserProof | undefined {
  const statement = ctx.metadata.get(STATEMENT_METADATA)[0];
  const signature = ctx.metadata.get(SIGNATURE_METADATA)[0];
  const keyId = ctx.metadata.get(KEY_ID_METADATA)[0];
  if (!Buffer.isBuffer(statement) || !Buffer.isBuffer(signature) || typeof keyId !== "string") return undefined;
  // The SDK sends canonical bytes, so re-encoding reproduces exactly what was signed; the
  // authority checks the digest itself and refuses anything else.
  return { statement, signature, keyId, body: canonicalEncode(type as typeof CreateVmRequest, req as CreateVmRequest) };
}

/** One entry per account, each with at least one scope: what the token authority can issue. */
function validateServiceAccounts(accounts: ServiceAccountGrant[]): ServiceAccountGrant[] {
  const seen = new Set<string>();
  return accounts.map((a, i) => {
    if (!a.email) throw invalidArgument(`service_accounts[${i}].email`, "name the service account");
    if (seen.has(a.email)) throw invalidArgument(`service_accounts[${i}].email`, `${a.email} is listed twice; give each account once with all its scopes`);
    seen.add(a.email);
    if (a.scopes.length === 0) throw invalidArgument(`service_accounts[${i}].scopes`, `give ${a.email} at least one scope`);
    return { email: a.email, scopes: [...new Set(a.scopes)].sort() };
  });
}

export function createVmHandlers(deps: VmServiceDeps): Partial<Handlers<typeof VmServiceService>> {
  const { repo, events, placement } = deps;
  const now = deps.now ?? Date.now;
  const changes = deps.changes ?? new VmRecordChanges(repo, events, now);

  async function visible(vmId: string, ctx: CallContext): Promise<Vm> {
    const vm = await repo.get(vmId);
    if (!vm || (vm.owner !== ctx.caller.principal && !isAdmin(ctx))) throw notFound(vmId);
    return vm;
  }

  /** Moves a VM to `to` if it is still in the state `vm` shows; emits the event; returns the new record. */
  function move(vm: Vm, to: VmState, type: VmEventType, detail: string, initiator: string, patch: VmPatch = {}): Promise<Vm> {
    return changes.move(vm, to, type, detail, initiator, patch);
  }

  /**
   * move() after a host command that has no transitional state of its own (pause, resume): a
   * heartbeat may have recorded the host's new state first, which is the outcome asked for.
   */
  async function settle(vm: Vm, to: VmState, type: VmEventType, detail: string, initiator: string): Promise<Vm> {
    try {
      return await move(vm, to, type, detail, initiator);
    } catch (e) {
      const current = e instanceof TrustplaneError && e.reason === "CONCURRENT_CHANGE" ? await repo.get(vm.vmId) : undefined;
      if (current?.state === to) return current;
      throw e;
    }
  }

  function specOf(vm: Vm): InstanceSpec {
    return {
      vmId: vm.vmId,
      name: vm.name,
      projectId: vm.owner,
      requiredFeatures: vm.requiredFeatures,
      hypervisor: vm.hypervisor,
      image: vm.image,
      resources: vm.resources,
      volumes: vm.volumes,
      network: vm.network,
      serviceAccounts: vm.serviceAccounts,
      command: vm.command,
    };
  }

  function placementRequest(vm: Vm): PlacementRequest {
    return { vmId: vm.vmId, image: vm.image, os: vm.os, resources: vm.resources!, hypervisor: vm.hypervisor, features: placementFeatures(vm.requiredFeatures, vm.volumes.length > 0), region: vm.region };
  }

  /** STARTING on the chosen host, then on each alternate (back through SCHEDULED); FAILED when none starts it. */
  async function bringUp(vm: Vm, initiator: string, proof?: UserProof): Promise<void> {
    let current = vm;
    const hosts = [vm.hostId, ...vm.alternateHostIds];
    const failures: string[] = [];
    for (let i = 0; i < hosts.length; i++) {
      const hostId = hosts[i]!;
      if (i > 0) {
        const claimed = await placement.reclaim(vm.vmId, hostId, placementRequest(vm));
        if (!claimed) {
          failures.push(`${hostId}: no longer fits`);
          continue;
        }
        current = await move(current, VmState.VM_STATE_SCHEDULED, VmEventType.VM_EVENT_TYPE_DEFINED, `retrying on ${hostId} after ${failures[failures.length - 1]}`, "scheduler", {
          hostId,
          // A requested region held for every alternate (RegionFilter); otherwise it moves with the VM.
          region: claimed.region,
        });
      }
      current = await move(current, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, `starting on ${hostId}`, initiator);
      try {
        const control = await deps.hostControl(hostId);
        const { instance } = await control.createInstance({ requestId: `create-${vm.vmId}-${hostId}`, spec: specOf(current), start: true }, { deadlineMs: 120_000 });
        const running = await move(current, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, `running on ${hostId}`, initiator, { accelerator: instance?.accelerator ?? "", failureReason: "", ...(instance?.network ? { network: instance.network } : {}) });
        if (running.serviceAccounts.length && proof && deps.attachServiceAccounts) {
          try {
            await deps.attachServiceAccounts(running, proof);
            await events.publish(running.owner, { vmId: vm.vmId, type: VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, detail: `service accounts ${running.serviceAccounts.map((a) => a.email).join(", ")} attached`, initiator, state: running.state, timeMs: now() });
          } catch (e) {
            deps.logger.warn({ vmId: vm.vmId, err: (e as Error).message }, "service accounts could not be attached");
            await events.publish(running.owner, { vmId: vm.vmId, type: VmEventType.VM_EVENT_TYPE_FAILED, detail: `service accounts not attached: ${(e as Error).message}`, initiator: "token-authority", state: running.state, timeMs: now() });
          }
        }
        return;
      } catch (e) {
        const reason = e instanceof TrustplaneError ? `${e.reason}: ${e.message}` : (e as Error).message;
        failures.push(`${hostId}: ${reason}`);
        deps.logger.warn({ vmId: vm.vmId, hostId, reason }, "VM failed to start on host");
        const latest = await repo.get(vm.vmId);
        // Terminated (or otherwise moved on) while starting: nothing left to retry.
        if (!latest || latest.state !== VmState.VM_STATE_STARTING) return;
        current = latest;
      }
    }
    await placement.release(vm.vmId);
    await move(current, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, "no host could start it", "scheduler", { failureReason: failures.join("; ") });
  }

  /** Refuses a device or network change on a VM that is ending or gone (nothing on a host to change). */
  function assertNotEnded(vm: Vm, action: string): void {
    if (vm.state === VmState.VM_STATE_TERMINATING || vm.state === VmState.VM_STATE_TERMINATED) {
      throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `cannot ${action} VM ${vm.vmId} while it is ${stateName(vm.state)}`, "vm_id");
    }
  }

  async function onHost<T>(vm: Vm, fn: (c: HostControlClient) => Promise<T>): Promise<T> {
    if (!vm.hostId) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `VM ${vm.vmId} has no host yet`, "vm_id");
    return fn(await deps.hostControl(vm.hostId));
  }

  function validateCreate(req: Parameters<NonNullable<Handlers<typeof VmServiceService>["createVm"]>>[0]) {
    if (!NAME_RE.test(req.name)) throw invalidArgument("name", "use 1-63 lowercase letters, digits or dashes, starting and ending with a letter or digit");
    const image = imageInfo(req.image);
    if (req.os && req.os !== image.os) throw invalidArgument("os", `image ${image.name} carries ${image.os}, not ${req.os}`);
    const r = req.resources;
    if (!r || r.vcpus < 1 || r.vcpus > LIMITS.vcpus) throw invalidArgument("resources.vcpus", `must be 1..${LIMITS.vcpus}`, "IMPOSSIBLE_RESOURCES");
    if (r.memoryMib < 16 || r.memoryMib > LIMITS.memoryMib) throw invalidArgument("resources.memory_mib", `must be 16..${LIMITS.memoryMib}`, "IMPOSSIBLE_RESOURCES");
    if (r.diskGib < 0 || r.diskGib > LIMITS.diskGib) throw invalidArgument("resources.disk_gib", `must be 0..${LIMITS.diskGib}`, "IMPOSSIBLE_RESOURCES");
    if (req.hypervisor !== HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED && !(req.hypervisor in HypervisorType)) throw invalidArgument("hypervisor", "unknown hypervisor type", "UNKNOWN_HYPERVISOR");
    for (const f of req.requiredFeatures) if (f === Feature.FEATURE_UNSPECIFIED || !(f in Feature)) throw invalidArgument("required_features", `unknown feature ${f}`);
    const ids = new Set<string>();
    for (const v of req.volumes) {
      if (!VOLUME_ID_RE.test(v.volumeId) || v.sizeGib < 1) throw invalidArgument("volumes", `volume ${JSON.stringify(v.volumeId)} needs a lowercase id and size_gib ≥ 1`);
      if (ids.has(v.volumeId)) throw invalidArgument("volumes", `volume ${v.volumeId} is listed twice`);
      ids.add(v.volumeId);
    }
    return { image, network: checkNetwork("network", req.network) };
  }

  return {
    async createVm(req, ctx) {
      const { image, network } = validateCreate(req);
      for (const sa of req.serviceAccounts) {
        const allowed = deps.canActAs ? await deps.canActAs(ctx.caller.principal, sa.email) : isAdmin(ctx);
        if (!allowed) throw new TrustplaneError("PERMISSION_DENIED", "NOT_ON_ACL", `${ctx.caller.principal} may not act as service account ${sa.email}`, "service_accounts");
      }
      const vmId = `vm-${randomBytes(6).toString("hex")}`;
      const preq: PlacementRequest = { vmId, image: image.name, os: image.os, resources: req.resources!, hypervisor: req.hypervisor, features: placementFeatures(req.requiredFeatures, req.volumes.length > 0), region: req.region };
      const decision = await placement.place(preq);
      if (decision.hypervisor === HypervisorType.HYPERVISOR_TYPE_SANDBOX && network.portForwards.length) {
        // A process VM's network namespace holds only its loopback: there is nothing to forward to.
        await placement.release(vmId);
        throw invalidArgument("network.port_forwards", "the sandbox hypervisor has no guest network to forward ports into; use an image that runs on qemu, or no forwards");
      }
      const t = now();
      const vm: Vm = {
        vmId,
        name: req.name,
        owner: ctx.caller.principal,
        image: image.name,
        os: image.os,
        resources: req.resources,
        hypervisor: decision.hypervisor,
        hypervisorReason: decision.reason,
        suggestion: decision.suggestion?.text ?? "",
        suggestedHypervisor: decision.suggestion?.hypervisor ?? HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED,
        requiredFeatures: req.requiredFeatures,
        // Where it runs, as Nova records the host's availability zone when none was asked for.
        region: req.region || decision.region,
        hostId: decision.hostId,
        alternateHostIds: decision.alternates,
        state: VmState.VM_STATE_SCHEDULED,
        failureReason: "",
        accelerator: "",
        serviceAccounts: req.serviceAccounts,
        volumes: req.volumes,
        network,
        command: req.command,
        createdAtMs: t,
        updatedAtMs: t,
      };
      try {
        await repo.create(vm);
      } catch (e) {
        await placement.release(vmId);
        throw e;
      }
      await events.publish(vm.owner, { vmId, type: VmEventType.VM_EVENT_TYPE_DEFINED, detail: `scheduled on ${vm.hostId}: ${vm.hypervisorReason}`, initiator: ctx.caller.principal, state: vm.state, timeMs: t });
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.create", target: vmId, outcome: "ok", requestId: ctx.requestId, detail: { hostId: vm.hostId, hypervisor: HypervisorType[vm.hypervisor] } });
      const proof = userProof(ctx, req);
      void bringUp(vm, ctx.caller.principal, proof).catch((e: Error) => deps.logger.error({ vmId, err: e.message }, "VM bring-up failed"));
      return { vm };
    },

    async getVm(req, ctx) {
      return { vm: await visible(req.vmId, ctx) };
    },

    async listVms(req, ctx) {
      if (req.pageSize < 0 || req.pageSize > 1000) throw invalidArgument("page_size", "must be 0..1000 (0: 100)");
      const page = await repo.list({
        // Only admins may look at another owner's VMs; everyone else always sees their own.
        owner: isAdmin(ctx) ? req.owner || undefined : ctx.caller.principal,
        pageSize: req.pageSize,
        pageToken: req.pageToken || undefined,
        state: req.state || undefined,
        hostId: req.hostId || undefined,
        hypervisor: req.hypervisor || undefined,
        region: req.region || undefined,
      });
      return { vms: page.items, nextPageToken: page.nextPageToken ?? "" };
    },

    async startVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      vm = await move(vm, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, "start", ctx.caller.principal);
      try {
        const { instance } = await onHost(vm, (c) => c.startInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
        vm = await move(vm, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, "started", ctx.caller.principal, { accelerator: instance?.accelerator ?? vm.accelerator, failureReason: "", ...(instance?.network ? { network: instance.network } : {}) });
      } catch (e) {
        vm = await move(vm, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, "start failed", `host:${vm.hostId}`, { failureReason: (e as Error).message });
        throw e;
      }
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.start", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
      return { vm };
    },

    async stopVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      const timeout = req.timeoutSeconds || deps.stopTimeoutSeconds || 30;
      if (timeout < 0 || timeout > 3600) throw invalidArgument("timeout_seconds", "must be 0..3600");
      vm = await move(vm, VmState.VM_STATE_STOPPING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, req.force ? "forced stop" : `graceful stop (timeout ${timeout} s)`, ctx.caller.principal);
      let forced = req.force;
      try {
        forced = (await onHost(vm, (c) => c.stopInstance({ requestId: ctx.requestId, vmId: vm.vmId, timeoutSeconds: timeout, force: req.force }, { deadlineMs: (timeout + 30) * 1000 }))).forced;
      } catch (e) {
        vm = await move(vm, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, "stop failed", `host:${vm.hostId}`, { failureReason: (e as Error).message });
        throw e;
      }
      const how = req.force ? "stopped by force" : forced ? `stopped by force after the ${timeout} s graceful window` : "stopped gracefully";
      vm = await move(vm, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, how, ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.stop", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { force: req.force, forced } });
      return { vm, forced };
    },

    async pauseVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      assertTransition(vm.vmId, vm.state, VmState.VM_STATE_PAUSED, "pause");
      await onHost(vm, (c) => c.pauseInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
      vm = await settle(vm, VmState.VM_STATE_PAUSED, VmEventType.VM_EVENT_TYPE_SUSPENDED, "paused", ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.pause", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
      return { vm };
    },

    async resumeVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (vm.state !== VmState.VM_STATE_PAUSED) assertTransition(vm.vmId, vm.state, VmState.VM_STATE_UNSPECIFIED, "resume");
      await onHost(vm, (c) => c.resumeInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
      vm = await settle(vm, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_RESUMED, "resumed", ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.resume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
      return { vm };
    },

    async terminateVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (vm.state === VmState.VM_STATE_TERMINATED) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `VM ${vm.vmId} is already terminated`, "vm_id");
      // A VM failed by its host's silence cannot be reached to end it, and must not hold its
      // tokens and its claim until the host is back: it is terminated in the record, and the
      // host ends the instance at its first heartbeat (HeartbeatResponse.orphaned_vm_ids names
      // instances whose record is TERMINATED). Its long-term tokens are released (revoked with the last
      // VM), so an instance still running on a partitioned host loses them meanwhile.
      const hostDown = vm.state === VmState.VM_STATE_FAILED && vm.failureReason === HOST_DOWN && !!vm.hostId && !!deps.hostUp && !(await deps.hostUp(vm.hostId));
      vm = await move(vm, VmState.VM_STATE_TERMINATING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, "terminate", ctx.caller.principal);
      if (vm.hostId && !hostDown) {
        try {
          await onHost(vm, (c) => c.terminateInstance({ requestId: ctx.requestId, vmId: vm.vmId }, { deadlineMs: 120_000 }));
        } catch (e) {
          // An instance the host never created (start failed) is already gone.
          if (!(e instanceof TrustplaneError && e.status === "NOT_FOUND")) {
            await move(vm, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, "terminate failed", `host:${vm.hostId}`, { failureReason: (e as Error).message });
            throw e;
          }
        }
      }
      await placement.release(vm.vmId);
      const detail = hostDown ? `terminated while host ${vm.hostId} is down: the host ends the instance when it is back` : "terminated";
      vm = await move(vm, VmState.VM_STATE_TERMINATED, VmEventType.VM_EVENT_TYPE_UNDEFINED, detail, ctx.caller.principal);
      // The instance is gone, so its holds on long-term tokens go too; the last VM holding a
      // token takes it with it (revoked and pushed to the agents). A failure here must not
      // undo the termination: it is logged and audited with the accessors left to release.
      let tokensReleased = true;
      if (vm.hostId && deps.releaseServiceAccounts) {
        try {
          await deps.releaseServiceAccounts(vm, ctx.requestId);
        } catch (e) {
          tokensReleased = false;
          deps.logger.error({ vmId: vm.vmId, err: (e as Error).message }, "terminated VM could not release its long-term tokens");
        }
      }
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.terminate", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { tokensReleased, ...(hostDown ? { hostDown: vm.hostId } : {}) } });
      return { vm };
    },

    async attachVolume(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      const volume = req.volume;
      if (!volume || !VOLUME_ID_RE.test(volume.volumeId) || volume.sizeGib < 1) throw invalidArgument("volume", "give a lowercase volume_id and size_gib ≥ 1");
      if (vm.state !== VmState.VM_STATE_RUNNING) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `hot-plug needs a RUNNING VM; ${vm.vmId} is ${stateName(vm.state)}`, "vm_id");
      if (vm.volumes.some((v) => v.volumeId === volume.volumeId)) throw new TrustplaneError("ALREADY_EXISTS", "VOLUME_ATTACHED", `volume ${volume.volumeId} is already attached to ${vm.vmId}`, "volume.volume_id");
      const res = await onHost(vm, (c) => c.attachInstanceVolume({ requestId: ctx.requestId, vmId: vm.vmId, volume }));
      // A volume change is not a state change: it is recorded over whatever state the VM is in now.
      vm =
        (await changes.amend(vm.vmId, (cur) => (cur.volumes.some((v) => v.volumeId === volume.volumeId) ? undefined : { volumes: [...cur.volumes, volume] }), {
          type: VmEventType.VM_EVENT_TYPE_DEVICE_ADDED,
          detail: `volume ${volume.volumeId} attached${res.device ? ` as ${res.device}` : ""}`,
          initiator: ctx.caller.principal,
        })) ?? (await visible(vm.vmId, ctx));
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.attach_volume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { volumeId: volume.volumeId } });
      return { vm, device: res.device };
    },

    async detachVolume(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (req.timeoutSeconds < 0 || req.timeoutSeconds > 3600) throw invalidArgument("timeout_seconds", "must be 0..3600 (0: 10 s)");
      assertNotEnded(vm, "detach a volume from");
      if (!vm.volumes.some((v) => v.volumeId === req.volumeId)) throw new TrustplaneError("NOT_FOUND", "VOLUME_NOT_ATTACHED", `volume ${req.volumeId} is not attached to ${vm.vmId}`, "volume_id");
      await onHost(vm, (c) => c.detachInstanceVolume({ requestId: ctx.requestId, vmId: vm.vmId, volumeId: req.volumeId, timeoutSeconds: req.timeoutSeconds || 10 }));
      vm =
        (await changes.amend(vm.vmId, (cur) => (cur.volumes.some((v) => v.volumeId === req.volumeId) ? { volumes: cur.volumes.filter((v) => v.volumeId !== req.volumeId) } : undefined), {
          type: VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED,
          detail: `volume ${req.volumeId} detached`,
          initiator: ctx.caller.principal,
        })) ?? (await visible(vm.vmId, ctx));
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.detach_volume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { volumeId: req.volumeId } });
      return { vm };
    },

    async configureNetwork(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      const network = checkNetwork("network", req.network);
      assertNotEnded(vm, "configure the network of");
      const { instance } = await onHost(vm, (c) => c.configureInstanceNetwork({ requestId: ctx.requestId, vmId: vm.vmId, network }));
      // The host's answer holds the ports it actually chose for host_port 0.
      const applied = instance?.network ?? network;
      vm =
        (await changes.amend(vm.vmId, () => ({ network: applied }), {
          type: VmEventType.VM_EVENT_TYPE_DEFINED,
          detail: `network updated (${applied.mode}): ${describeForwards(applied)}`,
          initiator: ctx.caller.principal,
        })) ?? (await visible(vm.vmId, ctx));
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.configure_network", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { forwards: describeForwards(applied) } });
      return { vm };
    },

    async setVmServiceAccounts(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      const next = validateServiceAccounts(req.serviceAccounts);
      const pair = (a: ServiceAccountGrant) => `${a.email} ${[...new Set(a.scopes)].sort().join(" ")}`;
      const before = new Set(vm.serviceAccounts.map(pair));
      for (const sa of next) {
        if (before.has(pair(sa))) continue;
        const allowed = deps.canActAs ? await deps.canActAs(ctx.caller.principal, sa.email) : isAdmin(ctx);
        if (!allowed) throw new TrustplaneError("PERMISSION_DENIED", "NOT_ON_ACL", `${ctx.caller.principal} may not act as service account ${sa.email}`, "service_accounts");
      }
      // The accounts live in the VM's authorization process on its host, which exists from
      // the first start until termination; while the VM is being placed or started the
      // create request's own accounts are still being attached.
      const live = [VmState.VM_STATE_RUNNING, VmState.VM_STATE_PAUSED, VmState.VM_STATE_STOPPED, VmState.VM_STATE_STOPPING].includes(vm.state);
      if (!live) {
        throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `service accounts can change on a RUNNING, PAUSED or STOPPED VM; ${vm.vmId} is ${stateName(vm.state)}`, "vm_id");
      }
      if (live && vm.hostId) {
        if (deps.changeServiceAccounts) {
          const proof = userProof(ctx, req, SetVmServiceAccountsRequest);
          if (!proof) throw new TrustplaneError("UNAUTHENTICATED", "USER_PROOF_MISSING", "the call carries no user signature to forward to the token authority", "service_accounts");
          await deps.changeServiceAccounts(vm, next, proof, ctx.requestId);
        }
        await onHost(vm, (c) => c.setInstanceServiceAccounts({ requestId: ctx.requestId, vmId: vm.vmId, serviceAccounts: next }));
      }
      // The host already has the new accounts: record them even if the state moved meanwhile
      // (a guest that exited is STOPPED now, and keeps its authorization process), without
      // overwriting a volume or network change made at the same time.
      const detail = `service accounts now ${next.map((a) => a.email).join(", ") || "none"}`;
      vm = (await changes.amend(vm.vmId, () => ({ serviceAccounts: next }), { type: VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, detail, initiator: ctx.caller.principal })) ?? vm;
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.set_service_accounts", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { accounts: next.map((a) => a.email) } });
      return { vm };
    },

    async *watchVmEvents(req, ctx) {
      if (req.vmId) await visible(req.vmId, ctx);
      const owner = isAdmin(ctx) ? undefined : ctx.caller.principal;
      for await (const event of events.watch({ vmId: req.vmId || undefined, owner, afterSeq: req.afterSeq }, ctx.signal)) yield { event };
    },

    async getCapabilities() {
      return { hosts: await placement.capabilities() };
    },

    async listImages() {
      return { images: IMAGES.map((i) => ({ name: i.name, os: i.os, hypervisors: i.hypervisors, description: i.description })) };
    },
  };
}

export type { Instance };
