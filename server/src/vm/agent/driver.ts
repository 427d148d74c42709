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

/**
 * What another agent area provides for guests of one image (e.g. the job bridge for
 * `job-runner`): a host channel, the image's own read-only files and its command.
 */
export interface GuestSupport {
  /** Host directory holding the host channel (a unix socket an agent area serves), bound
   * read-only at GUEST_CHANNEL_DIR in the guest, like a virtio-serial/vsock port. */
  channelDir?: string;
  /** Host files or directories bound read-only into the guest at the same path. */
  readOnlyPaths?: string[];
  /** The guest's command when the spec gives none. */
  command?: string[];
  /** Cap resident memory with a memory cgroup instead of an address-space rlimit (V8
   * reserves ~10 GiB of address space per WebAssembly memory, so RLIMIT_AS cannot cap it). */
  memoryCgroup?: boolean;
  /** Nothing the guest holds may reach the host's disk: its root is read-only (only its
   * in-memory /tmp is writable, charged to its memory) and its console goes nowhere. */
  noDiskWrites?: boolean;
}

/** Where a guest finds its host channel. */
export const GUEST_CHANNEL_DIR = "/run/trustplane";

/** An agent area's support for guests of one image, asked at each start of such a VM. */
export interface GuestSupportProvider {
  prepare(spec: InstanceSpec, dir: string): Promise<GuestSupport>;
  /** The VM is gone (terminated): close its channel. */
  released(vmId: string): Promise<void>;
}

/** What the control plane hands a driver at start beside the spec. */
export interface StartContext {
  /** This VM's own metadata endpoint on the host; the guest reaches it at 169.254.169.254:80. */
  metadataEndpoint?: { host: string; port: number };
  /** Present for images another agent area supports. */
  guest?: GuestSupport;
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
  /** The driver can give a guest a host channel (GuestSupport.channelDir). */
  readonly hostChannel?: boolean;
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
