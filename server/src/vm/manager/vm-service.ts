// VmService on the server: the one VM command set (seed 004). Validates at the edge, asks the
// placement (scheduler) for a host and hypervisor, records the VM, drives the host's control
// plane over HostControlService, and publishes every state change as an event. Every change
// goes through the state machine and a compare-and-set on the stored state.
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
import type { Placement, PlacementRequest } from "./placement.js";
import { IMAGES, imageInfo } from "./vm-images.js";
import type { VmEventHub } from "./vm-event-hub.js";
import type { VmRepository } from "./vm-repository.js";
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

  async function visible(vmId: string, ctx: CallContext): Promise<Vm> {
    const vm = await repo.get(vmId);
    if (!vm || (vm.owner !== ctx.caller.principal && !isAdmin(ctx))) throw notFound(vmId);
    return vm;
  }

  /** Moves a VM to `to` if it is still in `from`; emits the event; returns the new record. */
  async function move(vm: Vm, to: VmState, type: VmEventType, detail: string, initiator: string, patch: Partial<Vm> = {}): Promise<Vm> {
    assertTransition(vm.vmId, vm.state, to, detail);
    const next: Vm = { ...vm, ...patch, state: to, updatedAtMs: now() };
    if (!(await repo.compareAndSet(vm.state, next))) {
      const current = await repo.get(vm.vmId);
      throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `VM ${vm.vmId} changed meanwhile (now ${stateName(current?.state ?? VmState.VM_STATE_UNSPECIFIED)}); retry`, "vm_id");
    }
    await events.publish(next.owner, { vmId: vm.vmId, type, detail, initiator, state: to, timeMs: next.updatedAtMs });
    return next;
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
    return { vmId: vm.vmId, image: vm.image, os: vm.os, resources: vm.resources!, hypervisor: vm.hypervisor, features: vm.requiredFeatures, region: vm.region };
  }

  /** STARTING on the chosen host, then on each alternate (back through SCHEDULED); FAILED when none starts it. */
  async function bringUp(vm: Vm, initiator: string, proof?: UserProof): Promise<void> {
    let current = vm;
    const hosts = [vm.hostId, ...vm.alternateHostIds];
    const failures: string[] = [];
    for (let i = 0; i < hosts.length; i++) {
      const hostId = hosts[i]!;
      if (i > 0) {
        if (!(await placement.reclaim(vm.vmId, hostId, placementRequest(vm)))) {
          failures.push(`${hostId}: no longer fits`);
          continue;
        }
        current = await move(current, VmState.VM_STATE_SCHEDULED, VmEventType.VM_EVENT_TYPE_DEFINED, `retrying on ${hostId} after ${failures[failures.length - 1]}`, "scheduler", { hostId });
      }
      current = await move(current, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, `starting on ${hostId}`, initiator);
      try {
        const control = await deps.hostControl(hostId);
        const { instance } = await control.createInstance({ requestId: `create-${vm.vmId}-${hostId}`, spec: specOf(current), start: true }, { deadlineMs: 120_000 });
        const running = await move(current, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, `running on ${hostId}`, initiator, { accelerator: instance?.accelerator ?? "", failureReason: "" });
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
    for (const v of req.volumes) if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(v.volumeId) || v.sizeGib < 1) throw invalidArgument("volumes", `volume ${JSON.stringify(v.volumeId)} needs a lowercase id and size_gib ≥ 1`);
    return image;
  }

  return {
    async createVm(req, ctx) {
      const image = validateCreate(req);
      for (const sa of req.serviceAccounts) {
        const allowed = deps.canActAs ? await deps.canActAs(ctx.caller.principal, sa.email) : isAdmin(ctx);
        if (!allowed) throw new TrustplaneError("PERMISSION_DENIED", "NOT_ON_ACL", `${ctx.caller.principal} may not act as service account ${sa.email}`, "service_accounts");
      }
      const vmId = `vm-${randomBytes(6).toString("hex")}`;
      const preq: PlacementRequest = { vmId, image: image.name, os: image.os, resources: req.resources!, hypervisor: req.hypervisor, features: req.requiredFeatures, region: req.region };
      const decision = await placement.place(preq);
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
        region: req.region,
        hostId: decision.hostId,
        alternateHostIds: decision.alternates,
        state: VmState.VM_STATE_SCHEDULED,
        failureReason: "",
        accelerator: "",
        serviceAccounts: req.serviceAccounts,
        volumes: req.volumes,
        network: req.network ?? { mode: "user", portForwards: [] },
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
      const page = await repo.list({ owner: isAdmin(ctx) ? undefined : ctx.caller.principal, pageSize: req.pageSize, pageToken: req.pageToken || undefined, state: req.state || undefined, hostId: req.hostId || undefined });
      return { vms: page.items.filter((v) => !req.hypervisor || v.hypervisor === req.hypervisor), nextPageToken: page.nextPageToken ?? "" };
    },

    async startVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      vm = await move(vm, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, "start", ctx.caller.principal);
      try {
        const { instance } = await onHost(vm, (c) => c.startInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
        vm = await move(vm, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, "started", ctx.caller.principal, { accelerator: instance?.accelerator ?? vm.accelerator, failureReason: "" });
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
      try {
        await onHost(vm, (c) => c.stopInstance({ requestId: ctx.requestId, vmId: vm.vmId, timeoutSeconds: timeout, force: req.force }, { deadlineMs: (timeout + 30) * 1000 }));
      } catch (e) {
        vm = await move(vm, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, "stop failed", `host:${vm.hostId}`, { failureReason: (e as Error).message });
        throw e;
      }
      vm = await move(vm, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, "stopped", ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.stop", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { force: req.force } });
      return { vm };
    },

    async pauseVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      assertTransition(vm.vmId, vm.state, VmState.VM_STATE_PAUSED, "pause");
      await onHost(vm, (c) => c.pauseInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
      vm = await move(vm, VmState.VM_STATE_PAUSED, VmEventType.VM_EVENT_TYPE_SUSPENDED, "paused", ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.pause", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
      return { vm };
    },

    async resumeVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (vm.state !== VmState.VM_STATE_PAUSED) assertTransition(vm.vmId, vm.state, VmState.VM_STATE_UNSPECIFIED, "resume");
      await onHost(vm, (c) => c.resumeInstance({ requestId: ctx.requestId, vmId: vm.vmId }));
      vm = await move(vm, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_RESUMED, "resumed", ctx.caller.principal);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.resume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
      return { vm };
    },

    async terminateVm(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (vm.state === VmState.VM_STATE_TERMINATED) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `VM ${vm.vmId} is already terminated`, "vm_id");
      vm = await move(vm, VmState.VM_STATE_TERMINATING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, "terminate", ctx.caller.principal);
      if (vm.hostId) {
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
      vm = await move(vm, VmState.VM_STATE_TERMINATED, VmEventType.VM_EVENT_TYPE_UNDEFINED, "terminated", ctx.caller.principal);
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
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.terminate", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { tokensReleased } });
      return { vm };
    },

    async attachVolume(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      const volume = req.volume;
      if (!volume || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(volume.volumeId) || volume.sizeGib < 1) throw invalidArgument("volume", "give a lowercase volume_id and size_gib ≥ 1");
      if (vm.state !== VmState.VM_STATE_RUNNING) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `hot-plug needs a RUNNING VM; ${vm.vmId} is ${stateName(vm.state)}`, "vm_id");
      if (vm.volumes.some((v) => v.volumeId === volume.volumeId)) throw new TrustplaneError("ALREADY_EXISTS", "VOLUME_ATTACHED", `volume ${volume.volumeId} is already attached to ${vm.vmId}`, "volume.volume_id");
      const res = await onHost(vm, (c) => c.attachInstanceVolume({ requestId: ctx.requestId, vmId: vm.vmId, volume }));
      vm = await move(vm, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, `volume ${volume.volumeId} attached as ${res.device || "?"}`, ctx.caller.principal, { volumes: [...vm.volumes, volume] }).catch(async () => (await repo.get(vm.vmId))!);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.attach_volume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { volumeId: volume.volumeId } });
      return { vm, device: res.device };
    },

    async detachVolume(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      if (!vm.volumes.some((v) => v.volumeId === req.volumeId)) throw new TrustplaneError("NOT_FOUND", "VOLUME_NOT_ATTACHED", `volume ${req.volumeId} is not attached to ${vm.vmId}`, "volume_id");
      await onHost(vm, (c) => c.detachInstanceVolume({ requestId: ctx.requestId, vmId: vm.vmId, volumeId: req.volumeId, timeoutSeconds: req.timeoutSeconds || 10 }));
      vm = await move(vm, vm.state, VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED, `volume ${req.volumeId} detached`, ctx.caller.principal, { volumes: vm.volumes.filter((v) => v.volumeId !== req.volumeId) }).catch(async () => (await repo.get(vm.vmId))!);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.detach_volume", target: vm.vmId, outcome: "ok", requestId: ctx.requestId, detail: { volumeId: req.volumeId } });
      return { vm };
    },

    async configureNetwork(req, ctx) {
      let vm = await visible(req.vmId, ctx);
      for (const pf of req.network?.portForwards ?? []) {
        if (!["tcp", "udp"].includes(pf.protocol) || pf.hostPort < 1 || pf.hostPort > 65535 || pf.guestPort < 1 || pf.guestPort > 65535) throw invalidArgument("network.port_forwards", `bad forward ${JSON.stringify(pf)}`);
      }
      await onHost(vm, (c) => c.configureInstanceNetwork({ requestId: ctx.requestId, vmId: vm.vmId, network: req.network }));
      vm = { ...vm, network: req.network, updatedAtMs: now() };
      await repo.compareAndSet(vm.state, vm);
      await deps.storage.audit.append({ principal: ctx.caller.principal, action: "vm.configure_network", target: vm.vmId, outcome: "ok", requestId: ctx.requestId });
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
      // (a guest that exited is STOPPED now, and keeps its authorization process).
      for (let attempt = 0; ; attempt++) {
        const changed: Vm = { ...vm, serviceAccounts: next, updatedAtMs: now() };
        if (await repo.compareAndSet(vm.state, changed)) {
          vm = changed;
          break;
        }
        const latest = await repo.get(vm.vmId);
        if (!latest || attempt >= 4) throw new TrustplaneError("ABORTED", "CONCURRENT_CHANGE", `VM ${vm.vmId} kept changing while its accounts were changed; read it and retry`, "vm_id");
        vm = latest;
      }
      await events.publish(vm.owner, { vmId: vm.vmId, type: VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, detail: `service accounts now ${next.map((a) => a.email).join(", ") || "none"}`, initiator: ctx.caller.principal, state: vm.state, timeMs: vm.updatedAtMs });
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
