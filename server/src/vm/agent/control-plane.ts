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
import { driverOperations, type Driver, type DriverInstance } from "./driver.js";
import { processAlive } from "./process-liveness.js";

interface Record {
  spec: InstanceSpec;
  state: VmState;
  failureReason: string;
  handle?: DriverInstance;
  volumes: VolumeSpec[];
  network?: NetworkSpec;
}

const stateName = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? String(s);

export class ControlPlane {
  private readonly instances = new Map<string, Record>();
  private readonly emitter = new EventEmitter();
  private seq = 0;

  constructor(
    private readonly hostId: string,
    private readonly drivers: Driver[],
    private readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.emitter.setMaxListeners(0);
  }

  capabilities(): HostCapabilities {
    return {
      hostId: this.hostId,
      drivers: this.drivers.map(
        (d): DriverCapabilities => ({ hypervisor: d.hypervisor, operations: driverOperations(d), features: [...d.features], accelerator: d.accelerator(), cost: d.cost }),
      ),
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

  private async persist(r: Record): Promise<void> {
    const dir = this.vmDir(r.spec.vmId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, `.instance.json.${process.pid}.tmp`);
    await writeFile(tmp, JSON.stringify({ ...r, spec: r.spec }), { mode: 0o600 });
    await rename(tmp, path.join(dir, "instance.json"));
  }

  private emit(vmId: string, type: VmEventType, state: VmState, detail: string, initiator: string): void {
    const e: VmEvent = { seq: ++this.seq, vmId, type, detail, initiator, state, timeMs: Date.now() };
    this.emitter.emit("event", e);
  }

  private setState(r: Record, state: VmState, type: VmEventType, detail: string, initiator: string): void {
    r.state = state;
    this.emit(r.spec.vmId, type, state, detail, initiator);
  }

  private expect(r: Record, op: string, ...allowed: VmState[]): void {
    if (!allowed.includes(r.state)) {
      throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `cannot ${op} ${r.spec.vmId} while it is ${stateName(r.state)} (needs ${allowed.map(stateName).join(" or ")})`, "vm_id");
    }
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
    });
  }

  get(vmId: string): Instance {
    return this.toInstance(this.record(vmId));
  }

  list(): Instance[] {
    return [...this.instances.values()].map((r) => this.toInstance(r));
  }

  /** Reads persisted instances and matches them against the processes actually running. */
  async reconcile(): Promise<void> {
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
      if ((r.state === VmState.VM_STATE_RUNNING || r.state === VmState.VM_STATE_PAUSED || r.state === VmState.VM_STATE_STARTING || r.state === VmState.VM_STATE_STOPPING) && !live) {
        r.handle = undefined;
        this.setState(r, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, "its process was gone when the agent started", `host:${this.hostId}`);
        await this.persist(r);
        this.logger.warn({ vmId }, "reconciled an instance whose process died to STOPPED");
      }
    }
  }

  private events(r: Record) {
    return {
      exited: (vmId: string, detail: string) => {
        const cur = this.instances.get(vmId);
        if (!cur || cur !== r || cur.state === VmState.VM_STATE_STOPPING || cur.state === VmState.VM_STATE_TERMINATING || cur.state === VmState.VM_STATE_TERMINATED) return;
        cur.handle = undefined;
        this.setState(cur, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, detail, "guest");
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
    this.driverFor(spec.hypervisor);
    const r: Record = { spec, state: VmState.VM_STATE_STOPPED, failureReason: "", volumes: [...spec.volumes], network: spec.network };
    this.instances.set(spec.vmId, r);
    await this.persist(r);
    this.emit(spec.vmId, VmEventType.VM_EVENT_TYPE_DEFINED, r.state, "defined", initiator);
    if (start) return this.start(spec.vmId, initiator);
    return this.toInstance(r);
  }

  async start(vmId: string, initiator: string): Promise<Instance> {
    const r = this.record(vmId);
    this.expect(r, "start", VmState.VM_STATE_STOPPED, VmState.VM_STATE_FAILED);
    const d = this.driverFor(r.spec.hypervisor);
    this.setState(r, VmState.VM_STATE_STARTING, VmEventType.VM_EVENT_TYPE_DEFINED, `booting (${d.name})`, initiator);
    try {
      r.handle = await d.start(r.spec, this.vmDir(vmId), this.events(r));
      r.failureReason = "";
      this.setState(r, VmState.VM_STATE_RUNNING, VmEventType.VM_EVENT_TYPE_STARTED, `running (pid ${r.handle.pid}, ${r.handle.accelerator})`, initiator);
    } catch (e) {
      r.failureReason = (e as Error).message;
      this.setState(r, VmState.VM_STATE_FAILED, VmEventType.VM_EVENT_TYPE_FAILED, r.failureReason, `host:${this.hostId}`);
      await this.persist(r);
      throw e;
    }
    await this.persist(r);
    return this.toInstance(r);
  }

  async stop(vmId: string, timeoutMs: number, force: boolean, initiator: string): Promise<Instance> {
    const r = this.record(vmId);
    this.expect(r, "stop", VmState.VM_STATE_RUNNING, VmState.VM_STATE_PAUSED);
    const d = this.driverFor(r.spec.hypervisor);
    this.setState(r, VmState.VM_STATE_STOPPING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, force ? "forced stop" : "graceful stop", initiator);
    await d.stop(r.handle!, timeoutMs, force);
    r.handle = undefined;
    this.setState(r, VmState.VM_STATE_STOPPED, VmEventType.VM_EVENT_TYPE_STOPPED, "stopped", initiator);
    await this.persist(r);
    return this.toInstance(r);
  }

  async terminate(vmId: string, initiator: string): Promise<Instance> {
    const r = this.record(vmId);
    const d = this.driverFor(r.spec.hypervisor);
    this.setState(r, VmState.VM_STATE_TERMINATING, VmEventType.VM_EVENT_TYPE_SHUTDOWN, "terminating", initiator);
    if (r.handle) await d.stop(r.handle, 0, true);
    r.handle = undefined;
    // Nothing of the instance survives it: no process, no socket, no file.
    await rm(this.vmDir(vmId), { recursive: true, force: true });
    this.instances.delete(vmId);
    this.setState(r, VmState.VM_STATE_TERMINATED, VmEventType.VM_EVENT_TYPE_UNDEFINED, "terminated", initiator);
    return this.toInstance(r);
  }

  async attachVolume(vmId: string, volume: VolumeSpec): Promise<{ instance: Instance; device: string }> {
    const r = this.record(vmId);
    const attach = this.op(r, "attachVolume");
    this.expect(r, "attach a volume to", VmState.VM_STATE_RUNNING);
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
    this.expect(r, "detach a volume from", VmState.VM_STATE_RUNNING);
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
    this.expect(r, "configure the network of", VmState.VM_STATE_RUNNING, VmState.VM_STATE_STOPPED);
    if (r.handle) await configure(r.handle, network);
    r.network = network;
    await this.persist(r);
    return this.toInstance(r);
  }

  async pause(vmId: string): Promise<Instance> {
    const r = this.record(vmId);
    const pause = this.op(r, "pause");
    this.expect(r, "pause", VmState.VM_STATE_RUNNING);
    await pause(r.handle!);
    this.setState(r, VmState.VM_STATE_PAUSED, VmEventType.VM_EVENT_TYPE_SUSPENDED, "paused", "control-plane");
    await this.persist(r);
    return this.toInstance(r);
  }

  async resume(vmId: string): Promise<Instance> {
    const r = this.record(vmId);
    const resume = this.op(r, "resume");
    this.expect(r, "resume", VmState.VM_STATE_PAUSED);
    await resume(r.handle!);
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

  /** Stops every running instance (agent shutdown with `--stop-vms`); by default VMs outlive the agent. */
  async stopAll(): Promise<void> {
    for (const r of this.instances.values()) if (r.handle) await this.driverFor(r.spec.hypervisor).stop(r.handle, 5000, false).catch(() => undefined);
  }
}
