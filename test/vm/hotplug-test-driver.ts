// Test support: a driver whose function table has hotplug, pause and network reconfiguration,
// registered in a running agent's control plane so VmService can be driven end to end on a
// host without KVM. The guest is a real bubblewrap process (the sandbox driver boots it); the
// test decides what the "hypervisor" does: refuse starts, hold a volume past the detach
// timeout, release it later, stop the vCPUs on its own.
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Feature, HypervisorType, type InstanceSpec, type NetworkSpec, type VolumeSpec } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Driver, DriverEvents, DriverInstance, StartContext, StopResult } from "../../server/src/vm/agent/driver.js";
import { SandboxDriver } from "../../server/src/vm/agent/drivers/sandbox/sandbox-driver.js";
import { freeLoopbackPort } from "../../server/src/vm/agent/free-port.js";

/** Shared by the drivers of several hosts in one test (e.g. "the first start anywhere fails"). */
export interface HotplugScript {
  /** Starts to refuse before the next one succeeds. */
  failStarts: number;
  /** Hosts that were asked to start a VM, in order. */
  started: string[];
  /** Volumes whose detach the guest does not acknowledge in time. */
  holdVolumes: Set<string>;
}

export const newScript = (): HotplugScript => ({ failStarts: 0, started: [], holdVolumes: new Set() });

export class HotplugTestDriver implements Driver {
  readonly name = "hotplug-test";
  readonly hypervisor = HypervisorType.HYPERVISOR_TYPE_QEMU;
  readonly features = [Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_PAUSE, Feature.FEATURE_NETWORK_RECONFIGURE] as const;
  readonly cost = 4;
  private readonly guest = new SandboxDriver();
  private readonly sinks = new Map<string, DriverEvents>();

  constructor(
    private readonly hostId: string,
    readonly script: HotplugScript = newScript(),
  ) {}

  accelerator(): string {
    return "tcg";
  }

  routesMetadata(): boolean {
    return false;
  }

  private async resolve(network: NetworkSpec | undefined): Promise<NetworkSpec> {
    const portForwards = [];
    for (const f of network?.portForwards ?? []) portForwards.push({ protocol: f.protocol || "tcp", hostPort: f.hostPort || (await freeLoopbackPort()), guestPort: f.guestPort });
    return { mode: network?.mode || "user", portForwards };
  }

  async start(spec: InstanceSpec, dir: string, events: DriverEvents, _ctx?: StartContext): Promise<DriverInstance> {
    this.script.started.push(this.hostId);
    if (this.script.failStarts > 0) {
      this.script.failStarts--;
      throw new TrustplaneError("INTERNAL", "BOOT_FAILED", `the test hypervisor on ${this.hostId} refused to boot ${spec.vmId}`);
    }
    const instance = await this.guest.start({ ...spec, hypervisor: HypervisorType.HYPERVISOR_TYPE_SANDBOX, command: [] }, dir, events);
    this.sinks.set(spec.vmId, events);
    instance.accelerator = "tcg";
    instance.network = await this.resolve(spec.network);
    return instance;
  }

  stop(instance: DriverInstance, timeoutMs: number, force: boolean): Promise<StopResult> {
    return this.guest.stop(instance, timeoutMs, force);
  }

  async attachVolume(instance: DriverInstance, volume: VolumeSpec): Promise<{ device: string }> {
    const devices = ((instance.extra ??= {}).devices ??= []) as string[];
    const device = `vd${String.fromCharCode("b".charCodeAt(0) + devices.length)}`;
    devices.push(`${volume.volumeId}=${device}`);
    return { device };
  }

  async detachVolume(instance: DriverInstance, volumeId: string, timeoutMs: number): Promise<void> {
    if (this.script.holdVolumes.has(volumeId)) {
      await new Promise((r) => setTimeout(r, timeoutMs));
      throw new TrustplaneError("DEADLINE_EXCEEDED", "DETACH_TIMEOUT", `the guest did not release ${volumeId} within ${timeoutMs} ms`, "volume_id");
    }
    const devices = (instance.extra?.devices ?? []) as string[];
    instance.extra!.devices = devices.filter((d) => !d.startsWith(`${volumeId}=`));
  }

  async configureNetwork(instance: DriverInstance, network: NetworkSpec): Promise<NetworkSpec> {
    instance.network = await this.resolve(network);
    return instance.network;
  }

  async pause(): Promise<void> {}

  async resume(): Promise<void> {}

  /** The guest lets go of a held volume after its detach timed out (QEMU's late DEVICE_DELETED). */
  guestReleases(vmId: string, volumeId: string): void {
    this.script.holdVolumes.delete(volumeId);
    this.sinks.get(vmId)?.deviceRemoved?.(vmId, volumeId, `DEVICE_DELETED: the guest released ${volumeId}`);
  }

  /** The vCPUs stop without the control plane asking (QMP STOP from elsewhere), then run again. */
  hypervisorStops(vmId: string): void {
    this.sinks.get(vmId)?.suspended?.(vmId, "QMP STOP: vCPUs stopped");
  }

  hypervisorResumes(vmId: string): void {
    this.sinks.get(vmId)?.resumed?.(vmId, "QMP RESUME: vCPUs resumed");
  }
}
