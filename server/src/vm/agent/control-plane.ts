// The per-host control plane (seed 004): one uniform command set over the drivers' function
// tables. It owns each instance's state (a missing driver operation answers UNIMPLEMENTED
// naming the driver; a present one in the wrong state FAILED_PRECONDITION), persists
// instances atomically, reconciles with the real processes at start (a VM whose process
// died is STOPPED, never RUNNING) and leaves nothing behind on terminate.
import { EventEmitter } from "node:events";
import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import {
  Feature,
  HypervisorType,
  VmEventType,
  VmState,
  type DriverCapabilities,
  type HostCapabilities,
  Instance,
  type InstanceSpec,
  type NetworkSpec,
  type VmEvent,
  type VolumeSpec,
} from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Logger } from "../../runtime/logger.js";
import { driverOperations, type Driver, type DriverEvents, type DriverInstance, type GuestSupportProvider } from "./driver.js";
import { PROCESS_STATES, assertTransition, type InstanceCommand } from "./instance-state-machine.js";
import { processAlive } from "./process-liveness.js";

export interface ControlPlaneOptions {
  /**
   * Starts the VM's own metadata endpoint; drivers route 169.254.169.254:80 to it. With `at`
   * (an instance re-attached after an agent restart) it must come back on that very address,
   * where the guest is already routed, or throw.
   */
  metadataEndpoint?(spec: InstanceSpec, at?: { host: string; port: number }): Promise<{ host: string; port: number } | undefined>;
}

interface Record {
  spec: InstanceSpec;
  state: VmState;
  failureReason: string;
  handle?: DriverInstance;
  volumes: VolumeSpec[];
  network?: NetworkSpec;
  metadataEndpoint?: { host: string; port: number };
  /** Why the endpoint a running guest is routed to could not be brought back after a restart. */
  metadataEndpointLost?: string;
  startedAtMs?: number;
  /** A pause/resume the control plane itself is making: the driver's STOP/RESUME echo is its own. */
  expecting?: VmState;
}

export class ControlPlane {
  private readonly instances = new Map<string, Record>();
  /**
   * Cleanups still running after a guest exited on its own (relays, namespace, sockets, cgroup):
   * a start of the same VM waits for its cleanup, or the old boot's teardown would remove what
   * the new boot just made under the same names.
   */
  private readonly cleanups = new Map<string, Promise<void>>();
  private readonly emitter = new EventEmitter();
  private seq = 0;
  private writes = 0;
  private liveness?: NodeJS.Timeout;
  private readonly guestProviders = new Map<string, GuestSupportProvider>();

  constructor(
    private readonly hostId: string,
    private readonly drivers: Driver[],
    private readonly dir: string,
    private readonly logger: Logger,
    private readonly options: ControlPlaneOptions = {},
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** Another agent area supports guests of `image` (a host channel, files, a command). */
  provideGuest(image: string, provider: GuestSupportProvider): void {
    this.guestProviders.set(image, provider);
  }

  /**
   * Adds a driver, or replaces the one for the same hypervisor (new instances use it). Tells
   * `onCapabilitiesChanged` listeners, so the host re-reports its capability matrix.
   */
  registerDriver(driver: Driver): void {
    const i = this.drivers.findIndex((d) => d.hypervisor === driver.hypervisor);
    if (i >= 0) this.drivers[i] = driver;
    else this.drivers.push(driver);
    this.capabilitiesChanged();
  }

  /** A driver's capabilities changed (e.g. its KVM probe answered). */
  capabilitiesChanged(): void {
    this.emitter.emit("capabilities");
  }

  onCapabilitiesChanged(listener: () => void): () => void {
    this.emitter.on("capabilities", listener);
    return () => this.emitter.off("capabilities", listener);
  }

  capabilities(): HostCapabilities {
    return {
      hostId: this.hostId,
      drivers: this.drivers.map((d): DriverCapabilities => {
        const ops = driverOperations(d);
        // A feature that rests on optional operations is only claimed while the table has them.
        const needs: Partial<{ [f in Feature]: string[] }> = {
          [Feature.FEATURE_BLOCK_HOTPLUG]: ["attachVolume", "detachVolume"],
          [Feature.FEATURE_PAUSE]: ["pause", "resume"],
          [Feature.FEATURE_NETWORK_RECONFIGURE]: ["configureNetwork"],
        };
        const features = d.features.filter((f) => (needs[f] ?? []).every((op) => ops.includes(op)));
        return { hypervisor: d.hypervisor, operations: ops, features, accelerator: d.accelerator(), cost: d.cost };
      }),
    };
  }

  private driverFor(h: HypervisorType): Driver {
    const d = this.drivers.find((x) => x.hypervisor === h);
    if (!d) throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `host ${this.hostId} has no ${HypervisorType[h] ?? h} driver`, "hypervisor");
    return d;
  }

  private record(vmId: string): Record {
    const r = this.instances.get(vmId);
    if (!r) throw new TrustplaneError("NOT_FOUND", "INSTANCE_NOT_FOUND", `host ${this.hostId} runs no instance ${vmId}`, "vm_id");
    return r;
  }

  private vmDir(vmId: string): string {
    if (!/^[a-z0-9-]{1,64}$/.test(vmId)) throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_ARGUMENT", `vm id ${JSON.stringify(vmId)} is not a valid id`, "vm_id");
    return path.join(this.dir, vmId);
  }

  /** Atomic write (temp file + rename). Only `create` makes the directory, so a late event
   * for a terminated VM can never bring its files back. */
  private async persist(r: Record, create = false): Promise<void> {
    const dir = this.vmDir(r.spec.vmId);
    if (create) await mkdir(dir, { recursive: true, mode: 0o700 });
    else if (!this.instances.has(r.spec.vmId)) return;
    const tmp = path.join(dir, `.instance.json.${process.pid}.${++this.writes}.tmp`);
    try {
      await writeFile(tmp, JSON.stringify({ ...r, spec: r.spec }), { mode: 0o600 });
      await rename(tmp, path.join(dir, "instance.json"));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      await rm(tmp, { force: true });
    }
  }

  private emit(vmId: string, type: VmEventType, state: VmState, detail: string, initiator: string): void {
    const e: VmEvent = { seq: ++this.seq, vmId, type, detail, initiator, state, timeMs: Date.now() };
    this.emitter.emit("event", e);
  }

  private setState(r: Record, state: VmState, type: VmEventType, detail: string, initiator: string): void {
    r.state = state;
    this.emit(r.spec.vmId, type, state, detail, initiator);
  }

  private expect(r: Record, command: InstanceCommand): void {
    assertTransition(r.spec.vmId, command, r.state);
  }

  /** The driver's implementation of an optional operation, or UNIMPLEMENTED naming the driver. */
  private op<K extends "attachVolume" | "detachVolume" | "configureNetwork" | "pause" | "resume">(r: Record, name: K): NonNullable<Driver[K]> {
    const d = this.driverFor(r.spec.hypervisor);
    const fn = d[name];
    if (typeof fn !== "function") throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `the ${d.name} driver does not support ${name}`, "vm_id");
    return fn.bind(d) as NonNullable<Driver[K]>;
  }

  toInstance(r: Record): Instance {
    return Instance.fromPartial({
      vmId: r.spec.vmId,
      hypervisor: r.spec.hypervisor,
      state: r.state,
      failureReason: r.failureReason,
      accelerator: r.handle?.accelerator ?? "",
      pid: r.handle?.pid ?? 0,
      volumes: r.volumes,
      network: r.network,
      serviceAccounts: r.spec.serviceAccounts,
      name: r.spec.name,
      // Nothing listens where a lost endpoint was: do not advertise it.
      metadataEndpoint: r.metadataEndpoint && !r.metadataEndpointLost ? `${r.metadataEndpoint.host}:${r.metadataEndpoint.port}` : "",
      startedAtMs: r.handle ? (r.startedAtMs ?? 0) : 0,
    });
  }

  /** The driver and live handle of a running (or paused) instance, for host-side inspection
   * (privileged memory reads); FAILED_PRECONDITION when the guest is not running. */
  runningGuest(vmId: string): { driver: Driver; handle: DriverInstance; dir: string } {
    const r = this.record(vmId);
    if (!r.handle || (r.state !== VmState.VM_STATE_RUNNING && r.state !== VmState.VM_STATE_PAUSED)) {
      throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `guest ${vmId} is not running`, "vm_id");
    }
    return { driver: this.driverFor(r.spec.hypervisor), handle: r.handle, dir: this.vmDir(vmId) };
  }

  get(vmId: string): Instance {
    return this.toInstance(this.record(vmId));
  }

  list(): Instance[] {
    return [...this.instances.values()].map((r) => this.toInstance(r));
  }

  /**
   * Polls the processes of running instances: after an agent restart the agent is no longer
   * their parent, so an exit would otherwise go unnoticed (QEMU also reports it over QMP).
   */
  private watchLiveness(intervalMs = 2000): void {
    if (this.liveness) return;
    this.liveness = setInterval(() => {
      for (const r of this.instances.values()) {
        if ((r.state === VmState.VM_STATE_RUNNING || r.state === VmState.VM_STATE_PAUSED) && r.handle && !processAlive(r.handle.pid, r.handle.cmdlineMarker)) {
          this.events(r).exited(r.spec.vmId, "its process is gone");
        }
      }
    }, intervalMs);
    this.liveness.unref();
  }

  /** Reads persisted instances and matches them against the processes actually running. */
  async reconcile(): Promise<void> {
    this.watchLiveness();
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const vmId of await readdir(this.dir)) {
      let r: Record;
      try {
        r = JSON.parse(await readFile(path.join(this.dir, vmId, "instance.json"), "utf8")) as Record;
      } catch {
        continue;
      }
      this.instances.set(vmId, r);
      const live = r.handle && processAlive(r.handle.pid, r.handle.cmdlineMarker);
      if (PROCESS_STATES.includes(r.state) && !live) {
        // Never RUNNING without a process: a VM that died while the agent was away is STOPPED.
        // Its driver still cleans up what outlived it (sockets, relays, namespaces).
        const d = this.drivers.find((x) => x.hypervisor === r.spec.hypervisor);
        if (r.handle) await d?.stop(r.handle, 0, true).catch(() => undefined);
        r.handle = undefined;
        this.setState(r, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, "its process was gone when the agent started", `host:${this.hostId}`);
        await this.persist(r);
        this.logger.warn({ vmId }, "reconciled an instance whose process died to STOPPED");
      } else if (live && r.handle) {
        const d = this.drivers.find((x) => x.hypervisor === r.spec.hypervisor);
        await d?.reattach?.(r.handle, this.events(r)).catch((e: Error) => this.logger.warn({ vmId, err: e.message }, "could not re-attach to a running instance"));
      }
      if (r.metadataEndpoint) await this.restoreMetadataEndpoint(r);
    }
  }

  /**
   * The VM's authorization process died with the previous agent: bring it back on the address
   * its guest is routed to (QEMU's guestfwd, the sandbox's relay), empty until the VM manager
   * re-delivers the accounts. A guest that is not running gets a fresh endpoint at its next
   * start if the old one cannot be had; a running one keeps its route, and the loss is logged
   * and reported (event, empty metadata_endpoint) rather than hidden.
   */
  private async restoreMetadataEndpoint(r: Record): Promise<void> {
    const vmId = r.spec.vmId;
    const at = r.metadataEndpoint!;
    let lost: string | undefined;
    try {
      const got = await this.options.metadataEndpoint?.(r.spec, at);
      if (!got) lost = "no token agent to serve it";
      else if (got.host !== at.host || got.port !== at.port) lost = `it came back on ${got.host}:${got.port}`;
    } catch (e) {
      lost = (e as Error).message;
    }
    const wasLost = r.metadataEndpointLost;
    if (lost === undefined) {
      r.metadataEndpointLost = undefined;
      if (wasLost) await this.persist(r);
      return;
    }
    if (!r.handle) {
      // Nothing is routed to it: the next start asks for a new one.
      r.metadataEndpoint = undefined;
      r.metadataEndpointLost = undefined;
      await this.persist(r);
      this.logger.warn({ vmId, endpoint: `${at.host}:${at.port}`, err: lost }, "metadata endpoint of a stopped VM not restored; its next start gets a new one");
      return;
    }
    r.metadataEndpointLost = lost;
    await this.persist(r);
    this.logger.warn({ vmId, endpoint: `${at.host}:${at.port}`, reason: "METADATA_PORT_UNAVAILABLE", err: lost }, "metadata endpoint of a running VM could not be restored; its guest gets no tokens (recreate the VM)");
    this.emit(vmId, VmEventType.VM_EVENT_TYPE_FAILED, r.state, `METADATA_PORT_UNAVAILABLE: metadata endpoint ${at.host}:${at.port} not restored after the agent restart (${lost})`, `host:${this.hostId}`);
  }

  private events(r: Record): DriverEvents {
    const mine = (vmId: string) => this.instances.get(vmId) === r;
    return {
      note: (vmId: string, event: string, detail: string) => {
        if (!mine(vmId)) return;
        this.emit(vmId, VmEventType.VM_EVENT_TYPE_SHUTDOWN, r.state, `${event}: ${detail}`, "hypervisor");
      },
      // STOP / RESUME that the control plane did not ask for (a privileged operation, the
      // guest's own watchdog, a QMP client): the state follows the vCPUs.
      suspended: (vmId: string, detail: string) => {
        if (!mine(vmId) || r.expecting === VmState.VM_STATE_PAUSED || r.state !== VmState.VM_STATE_RUNNING) return;
        this.setState(r, VmState.VM_STATE_PAUSED, VmEventType.VM_EVENT_TYPE_SUSPENDED, detail, "hypervisor");
        void this.persist(r).catch(() => undefined);
      },
      resumed: (vmId: string, detail: string) => {
        if (!mine(vmId) || r.expecting === VmState.VM_STATE_RUNNING || r.state !== VmState.VM_STATE_PAUSED) return;
        this.setState(r, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_RESUMED, detail, "hypervisor");
        void this.persist(r).catch(() => undefined);
      },
      // The driver only reports a removal nobody was waiting for (a detach that had timed out).
      deviceRemoved: (vmId: string, volumeId: string, detail: string) => {
        if (!mine(vmId) || !r.volumes.some((v) => v.volumeId === volumeId)) return;
        r.volumes = r.volumes.filter((v) => v.volumeId !== volumeId);
        this.emit(vmId, VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED, r.state, detail, "guest");
        void this.persist(r).catch(() => undefined);
      },
      exited: (vmId: string, detail: string) => {
        const cur = this.instances.get(vmId);
        // Only an unexpected exit counts: stop/terminate/start own the other transitions (and
        // QEMU reports one exit twice: SHUTDOWN, then its QMP socket closing).
        if (!cur || cur !== r || (cur.state !== VmState.VM_STATE_RUNNING && cur.state !== VmState.VM_STATE_PAUSED)) return;
        const handle = cur.handle;
        cur.handle = undefined;
        this.setState(cur, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, detail, "guest");
        // What outlives the guest (QMP socket, metadata relays, namespace) goes with it.
        const d = this.drivers.find((x) => x.hypervisor === cur.spec.hypervisor);
        if (handle && d) {
          const cleanup = d
            .stop(handle, 0, true)
            .then(() => undefined, (e: Error) => this.logger.warn({ vmId, err: e.message }, "cleanup after the guest exited failed"))
            .finally(() => {
              if (this.cleanups.get(vmId) === cleanup) this.cleanups.delete(vmId);
            });
          this.cleanups.set(vmId, cleanup);
        }
        void this.persist(cur).catch(() => undefined);
      },
    };
  }

  async create(spec: InstanceSpec, start: boolean, initiator: string): Promise<Instance> {
    const existing = this.instances.get(spec.vmId);
    if (existing) {
      // Idempotent re-delivery of the same create: answer with what exists.
      if (existing.spec.hypervisor === spec.hypervisor) return this.toInstance(existing);
      throw new TrustplaneError("ALREADY_EXISTS", "INSTANCE_EXISTS", `instance ${spec.vmId} already exists on ${this.hostId}`, "vm_id");
    }
    const d = this.driverFor(spec.hypervisor);
    if (spec.volumes.length && typeof d.attachVolume !== "function") {
      throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `the ${d.name} driver does not support attachVolume (the spec asks for ${spec.volumes.length} volume(s))`, "volumes");
    }
    const r: Record = { spec, state: VmState.VM_STATE_PENDING, failureReason: "", volumes: [], network: spec.network };
    this.instances.set(spec.vmId, r);
    await this.persist(r, true);
    this.emit(spec.vmId, VmEventType.VM_EVENT_TYPE_DEFINED, r.state, "defined", initiator);
    if (start) return this.start(spec.vmId, initiator);
    return this.toInstance(r);
  }

  async start(vmId: string, initiator: string): Promise<Instance> {
    const r = this.record(vmId);
    this.expect(r, "start");
    const d = this.driverFor(r.spec.hypervisor);
    this.setState(r, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, `booting (${d.name})`, initiator);
    try {
      await this.cleanups.get(vmId);
      // Only a driver that can route 169.254.169.254 to it gets an endpoint (sandbox: root only).
      if (d.routesMetadata() && r.spec.network?.mode !== "none") r.metadataEndpoint ??= await this.options.metadataEndpoint?.(r.spec);
      const guest = await this.guestProviders.get(r.spec.image)?.prepare(r.spec, this.vmDir(vmId));
      if (guest?.channelDir && !d.hostChannel) {
        throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `the ${d.name} driver has no host channel, which image ${r.spec.image} needs`, "hypervisor");
      }
      r.handle = await d.start(r.spec, this.vmDir(vmId), this.events(r), { metadataEndpoint: r.metadataEndpoint, guest });
      if (r.handle.network) r.network = r.handle.network;
      r.startedAtMs = Date.now();
      r.failureReason = "";
      this.setState(r, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, `running (pid ${r.handle.pid}, ${r.handle.accelerator})`, initiator);
    } catch (e) {
      r.failureReason = (e as Error).message;
      this.setState(r, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, r.failureReason, `host:${this.hostId}`);
      await this.persist(r);
      throw e;
    }
    await this.persist(r);
    // Volumes named in the spec are hot-plugged once the guest runs, as an attach would.
    for (const v of r.spec.volumes) if (!r.volumes.some((x) => x.volumeId === v.volumeId)) await this.attachVolume(vmId, v);
    return this.toInstance(r);
  }

  async stop(vmId: string, timeoutMs: number, force: boolean, initiator: string): Promise<Instance> {
    return (await this.stopReport(vmId, timeoutMs, force, initiator)).instance;
  }

  /** As stop, also saying whether the guest had to be stopped by force. */
  async stopReport(vmId: string, timeoutMs: number, force: boolean, initiator: string): Promise<{ instance: Instance; forced: boolean }> {
    const r = this.record(vmId);
    this.expect(r, "stop");
    const d = this.driverFor(r.spec.hypervisor);
    this.setState(r, VmState.VM_STATE_STOPPING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, force ? "forced stop" : `graceful stop (${timeoutMs} ms, then forced)`, initiator);
    let forced = force;
    try {
      forced = (await d.stop(r.handle!, timeoutMs, force)).forced;
    } catch (e) {
      r.failureReason = (e as TrustplaneError).reason ?? "STOP_FAILED";
      this.setState(r, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, (e as Error).message, `host:${this.hostId}`);
      await this.persist(r);
      throw e;
    }
    r.handle = undefined;
    this.setState(r, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, forced && !force ? `stopped by force: the guest outlived the ${timeoutMs} ms graceful window` : "stopped", initiator);
    await this.persist(r);
    return { instance: this.toInstance(r), forced };
  }

  async terminate(vmId: string, initiator: string): Promise<Instance> {
    const r = this.record(vmId);
    const d = this.driverFor(r.spec.hypervisor);
    this.expect(r, "terminate");
    this.setState(r, VmState.VM_STATE_TERMINATING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, "terminating", initiator);
    if (r.handle) await d.stop(r.handle, 0, true);
    r.handle = undefined;
    await this.cleanups.get(vmId);
    // Nothing of the instance survives it: no process, no socket, no file.
    this.instances.delete(vmId);
    await this.guestProviders.get(r.spec.image)?.released(vmId).catch((e: Error) => this.logger.warn({ vmId, err: e.message }, "guest support cleanup failed"));
    // maxRetries: a straggling writer (a late driver event) may add a file while rm runs.
    await rm(this.vmDir(vmId), { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
    this.setState(r, VmState.VM_STATE_TERMINATED, VmEventType.VM_EVENT_TYPE_UNDEFINED, "terminated", initiator);
    return this.toInstance(r);
  }

  async attachVolume(vmId: string, volume: VolumeSpec): Promise<{ instance: Instance; device: string }> {
    const r = this.record(vmId);
    const attach = this.op(r, "attachVolume");
    this.expect(r, "attachVolume");
    if (r.volumes.some((v) => v.volumeId === volume.volumeId)) throw new TrustplaneError("ALREADY_EXISTS", "VOLUME_ATTACHED", `volume ${volume.volumeId} is already attached`, "volume");
    const { device } = await attach(r.handle!, volume);
    r.volumes.push(volume);
    this.emit(vmId, VmEventType.VM_EVENT_TYPE_DEVICE_ADDED, r.state, `${volume.volumeId} as ${device}`, "control-plane");
    await this.persist(r);
    return { instance: this.toInstance(r), device };
  }

  async detachVolume(vmId: string, volumeId: string, timeoutMs: number): Promise<Instance> {
    const r = this.record(vmId);
    const detach = this.op(r, "detachVolume");
    this.expect(r, "detachVolume");
    if (!r.volumes.some((v) => v.volumeId === volumeId)) throw new TrustplaneError("NOT_FOUND", "VOLUME_NOT_ATTACHED", `volume ${volumeId} is not attached`, "volume_id");
    await detach(r.handle!, volumeId, timeoutMs);
    r.volumes = r.volumes.filter((v) => v.volumeId !== volumeId);
    this.emit(vmId, VmEventType.VM_EVENT_TYPE_DEVICE_REMOVED, r.state, volumeId, "control-plane");
    await this.persist(r);
    return this.toInstance(r);
  }

  async configureNetwork(vmId: string, network: NetworkSpec): Promise<Instance> {
    const r = this.record(vmId);
    const configure = this.op(r, "configureNetwork");
    this.expect(r, "configureNetwork");
    r.network = r.handle ? await configure(r.handle, network) : network;
    await this.persist(r);
    return this.toInstance(r);
  }

  async pause(vmId: string): Promise<Instance> {
    const r = this.record(vmId);
    const pause = this.op(r, "pause");
    this.expect(r, "pause");
    r.expecting = VmState.VM_STATE_PAUSED;
    try {
      await pause(r.handle!);
    } finally {
      r.expecting = undefined;
    }
    this.setState(r, VmState.VM_STATE_PAUSED, VmEventType.VM_EVENT_TYPE_SUSPENDED, "paused", "control-plane");
    await this.persist(r);
    return this.toInstance(r);
  }

  async resume(vmId: string): Promise<Instance> {
    const r = this.record(vmId);
    const resume = this.op(r, "resume");
    this.expect(r, "resume");
    r.expecting = VmState.VM_STATE_RUNNING;
    try {
      await resume(r.handle!);
    } finally {
      r.expecting = undefined;
    }
    this.setState(r, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_RESUMED, "resumed", "control-plane");
    await this.persist(r);
    return this.toInstance(r);
  }

  /** Every event from now on (optionally for one VM) until `signal` aborts. */
  async *watch(vmId: string | undefined, signal: AbortSignal): AsyncGenerator<VmEvent> {
    const queue: VmEvent[] = [];
    let wake: (() => void) | undefined;
    const on = (e: VmEvent) => {
      if (!vmId || e.vmId === vmId) {
        queue.push(e);
        wake?.();
      }
    };
    this.emitter.on("event", on);
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        while (queue.length) yield queue.shift()!;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      this.emitter.off("event", on);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Stops every running or paused instance at once, gracefully within `timeoutMs` and then by
   * force (agent shutdown with `--stop-vms`; by default VMs outlive the agent). Each is STOPPED
   * in its record with initiator host:<id>, so the server hears of it; returns the ids stopped.
   */
  async stopAll(timeoutMs = 5000): Promise<string[]> {
    const live = [...this.instances.values()].filter((r) => r.handle && (r.state === VmState.VM_STATE_RUNNING || r.state === VmState.VM_STATE_PAUSED));
    const results = await Promise.allSettled(live.map((r) => this.stop(r.spec.vmId, timeoutMs, false, `host:${this.hostId}`)));
    results.forEach((res, i) => {
      if (res.status === "rejected") this.logger.warn({ vmId: live[i]!.spec.vmId, err: (res.reason as Error).message }, "could not stop a VM at agent shutdown");
    });
    return live.filter((_, i) => results[i]!.status === "fulfilled").map((r) => r.spec.vmId);
  }
}
