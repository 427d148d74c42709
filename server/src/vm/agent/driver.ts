// A hypervisor driver as libvirt has them: a table of operations. Optional operations a driver
// leaves out answer UNIMPLEMENTED (DRIVER_UNSUPPORTED, naming the driver) through the control
// plane, and the capability matrix is read off these tables, never written by hand.
import type { Feature, HypervisorType, InstanceSpec, NetworkSpec, VolumeSpec } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

/** What a driver keeps about one running instance (persisted as JSON for reconciliation). */
export interface DriverInstance {
  vmId: string;
  pid: number;
  /** Identifies the process beyond its pid (pid reuse): a substring of /proc/<pid>/cmdline. */
  cmdlineMarker: string;
  dir: string;
  accelerator: string;
  /** Driver-private state that must survive an agent restart (e.g. QEMU hotplug slots). */
  extra?: { [key: string]: unknown };
  /** The network as applied: host_port 0 replaced by the port the driver chose. */
  network?: NetworkSpec;
}

/** What the control plane hands a driver at start beside the spec. */
export interface StartContext {
  /** This VM's own metadata endpoint on the host; the guest reaches it at 169.254.169.254:80. */
  metadataEndpoint?: { host: string; port: number };
}

/** What a driver reports on its own; the control plane turns each into state and an event. */
export interface DriverEvents {
  /** The guest stopped on its own (powered off, crashed). */
  exited(vmId: string, detail: string): void;
  /** The vCPUs stopped (QMP STOP), whoever asked: RUNNING -> PAUSED unless a pause is under way. */
  suspended?(vmId: string, detail: string): void;
  /** The vCPUs run again (QMP RESUME): PAUSED -> RUNNING unless a resume is under way. */
  resumed?(vmId: string, detail: string): void;
  /** The guest released a volume after its detach had already timed out (late DEVICE_DELETED). */
  deviceRemoved?(vmId: string, volumeId: string, detail: string): void;
  /** A driver-level event worth telling watchers that changes no state (QMP POWERDOWN). */
  note?(vmId: string, event: string, detail: string): void;
}

/** How a stop ended: `forced` when the guest outlived the graceful window (or force was asked). */
export interface StopResult {
  forced: boolean;
}

export interface Driver {
  readonly name: string;
  readonly hypervisor: HypervisorType;
  readonly features: readonly Feature[];
  readonly cost: number;
  /** "kvm", "tcg" or "none"; "" while not yet known (a probe still running). */
  accelerator(): string;
  /**
   * Whether this driver can route the guest's 169.254.169.254:80 to its VM's own endpoint on
   * this host (QEMU: guestfwd, no privileges; sandbox: a per-VM network namespace, root only).
   */
  routesMetadata(): boolean;
  /** Prepares and boots the instance; resolves once it is running (its ready signal seen). */
  start(spec: InstanceSpec, dir: string, events: DriverEvents, ctx?: StartContext): Promise<DriverInstance>;
  /** After an agent restart, re-subscribe to a still-running instance (e.g. reconnect QMP). */
  reattach?(instance: DriverInstance, events: DriverEvents): Promise<void>;
  /** Graceful stop within `timeoutMs`, then forced; resolves when the process is gone. */
  stop(instance: DriverInstance, timeoutMs: number, force: boolean): Promise<StopResult>;
  attachVolume?(instance: DriverInstance, volume: VolumeSpec): Promise<{ device: string }>;
  detachVolume?(instance: DriverInstance, volumeId: string, timeoutMs: number): Promise<void>;
  /** Replaces the port forwards; answers the network as applied (chosen ports filled in). */
  configureNetwork?(instance: DriverInstance, network: NetworkSpec): Promise<NetworkSpec>;
  pause?(instance: DriverInstance): Promise<void>;
  resume?(instance: DriverInstance): Promise<void>;
}

/** The uniform operation names, in the order the capability matrix lists them. */
export const OPERATIONS = ["create", "start", "stop", "terminate", "attachVolume", "detachVolume", "configureNetwork", "pause", "resume"] as const;

export function driverOperations(d: Driver): string[] {
  const optional: Record<string, unknown> = { attachVolume: d.attachVolume, detachVolume: d.detachVolume, configureNetwork: d.configureNetwork, pause: d.pause, resume: d.resume };
  return OPERATIONS.filter((op) => !(op in optional) || typeof optional[op] === "function");
}
