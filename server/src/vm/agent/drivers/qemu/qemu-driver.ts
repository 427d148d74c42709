// The `qemu` driver (seed 004): spawns qemu-system-x86_64 (q35 + PCIe root ports for hotplug)
// with a QMP unix socket and a serial console file, boots the tiny guest built by
// scripts/build-guest.sh to its ready line, and translates the uniform commands to QMP:
// blockdev-add + device_add / device_del (DEVICE_DELETED) for volumes, system_powerdown then
// quit for stop, stop/cont for pause. KVM only when a bounded probe boot succeeds, else TCG.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";
import { Feature, HypervisorType, type InstanceSpec, type NetworkSpec, type VolumeSpec } from "../../../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { ConsoleWatcher } from "../../console-watcher.js";
import type { Driver, DriverEvents, DriverInstance, StartContext, StopResult } from "../../driver.js";
import { freeLoopbackPort } from "../../free-port.js";
import { processAlive, waitForExit } from "../../process-liveness.js";
import { QmpClient, type QmpEvent } from "./qmp-client.js";

const run = promisify(execFile);
export const GUEST_READY = /TRUSTPLANE-GUEST-READY/;
/** Hotplug slots: one PCIe root port per hot-pluggable volume. */
const HOTPLUG_SLOTS = 4;
const BUILD_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../../../scripts/build-guest.sh");

export interface QemuDriverOptions {
  /** Where build-guest.sh put vmlinuz + initramfs (default TRUSTPLANE_GUEST_DIR or ./.trustplane/guest). */
  guestDir?: string;
  /** "auto" probes KVM once with a bounded boot; "tcg" never tries KVM. */
  accelerator?: "auto" | "kvm" | "tcg";
  bootTimeoutMs?: number;
  /** Bound on the KVM probe boot (KVM guests were seen to hang after the BIOS here). */
  kvmProbeTimeoutMs?: number;
  /** Extra guest kernel arguments (e.g. trustplane.metadata=/path). */
  kernelArgs?: string[];
  /** Let the guest open outbound connections through slirp (default: only forwards + metadata). */
  outbound?: boolean;
  binary?: string;
}

export function defaultGuestDir(): string {
  return process.env.TRUSTPLANE_GUEST_DIR || path.resolve(".trustplane/guest");
}

/** The GUEST_VERSION build-guest.sh builds (bumped when /init or the modules change). */
export function scriptGuestVersion(script = BUILD_SCRIPT): string | undefined {
  try {
    return /^GUEST_VERSION=(\S+)/m.exec(readFileSync(script, "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

/** Whether the guest in `dir` was built by this version of the script (its manifest says so). */
export function guestIsCurrent(dir: string, script = BUILD_SCRIPT): boolean {
  const want = scriptGuestVersion(script);
  if (!want) return true; // no script to rebuild with: use what is there
  try {
    return readFileSync(path.join(dir, "manifest"), "utf8").split("\n").includes(`guest_version=${want}`);
  } catch {
    return false;
  }
}

export function qemuAvailable(binary = "qemu-system-x86_64"): boolean {
  return ["/usr/bin", "/usr/local/bin", "/bin"].some((d) => existsSync(path.join(d, binary)));
}

/** Extra per-instance state the driver keeps in the persisted handle. */
interface QemuState {
  slots: Record<string, number>;
  forwards: { protocol: string; hostPort: number; guestPort: number }[];
}

export class QemuDriver implements Driver {
  readonly name = "qemu";
  readonly hypervisor = HypervisorType.HYPERVISOR_TYPE_QEMU;
  readonly features = [Feature.FEATURE_BLOCK_HOTPLUG, Feature.FEATURE_MEMORY_INSPECTION, Feature.FEATURE_PAUSE, Feature.FEATURE_NETWORK_RECONFIGURE] as const;
  readonly cost = 4;
  private accel?: "kvm" | "tcg";
  private probing?: Promise<"kvm" | "tcg">;
  private readonly qmp = new Map<string, QmpClient>();
  /** `vmId/volumeId` of detaches waiting for their DEVICE_DELETED (the waiter finishes those). */
  private readonly detaching = new Set<string>();
  readonly guestDir: string;
  /** Measured time from spawn to the ready line of the last boot, per VM. */
  readonly bootMs = new Map<string, number>();

  constructor(private readonly o: QemuDriverOptions = {}) {
    this.guestDir = o.guestDir ?? defaultGuestDir();
    if (o.accelerator === "kvm" || o.accelerator === "tcg") this.accel = o.accelerator;
  }

  /** "" until the KVM probe has answered (the agent starts it at once and re-reports the result). */
  accelerator(): string {
    return this.accel ?? "";
  }

  /** guestfwd needs no privileges, only socat to connect each guest connection to the endpoint. */
  routesMetadata(): boolean {
    return existsSync("/usr/bin/socat");
  }

  /** Builds the guest with scripts/build-guest.sh unless this version of it is already there. */
  async ensureGuest(): Promise<{ kernel: string; initrd: string }> {
    const kernel = path.join(this.guestDir, "vmlinuz");
    const initrd = path.join(this.guestDir, "initramfs.cpio.gz");
    if (!existsSync(kernel) || !existsSync(initrd) || !guestIsCurrent(this.guestDir)) {
      await run("bash", [BUILD_SCRIPT], { env: { ...process.env, TRUSTPLANE_GUEST_DIR: this.guestDir }, timeout: 300_000 }).catch((e: Error & { stderr?: string }) => {
        throw new TrustplaneError("FAILED_PRECONDITION", "GUEST_IMAGE_MISSING", `cannot build the tiny guest (scripts/build-guest.sh): ${e.stderr?.slice(-300) ?? e.message}`);
      });
    }
    return { kernel, initrd };
  }

  /**
   * KVM when a bounded probe boot reaches the ready line, else TCG. Probed once per host
   * (kernel release + QEMU binary), cached in memory and in the guest dir.
   */
  async probeAccelerator(): Promise<"kvm" | "tcg"> {
    if (this.accel) return this.accel;
    this.probing ??= (async () => {
      const key = `${os.release()} ${this.o.binary ?? "qemu-system-x86_64"}`;
      const cacheFile = path.join(this.guestDir, "accelerator.json");
      try {
        const cached = JSON.parse(readFileSync(cacheFile, "utf8")) as { key: string; accelerator: "kvm" | "tcg" };
        if (cached.key === key) return cached.accelerator;
      } catch {}
      let result: "kvm" | "tcg" = "tcg";
      if (existsSync("/dev/kvm")) {
        const dir = path.join(os.tmpdir(), `tp-kvm-probe-${process.pid}-${Date.now()}`);
        mkdirSync(dir, { recursive: true });
        try {
          const { kernel, initrd } = await this.ensureGuest();
          const console = path.join(dir, "console.log");
          const child = spawn(this.o.binary ?? "qemu-system-x86_64", ["-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1 trustplane.net=0", "-serial", `file:${console}`], { stdio: "ignore" });
          try {
            await new ConsoleWatcher(console).waitFor(GUEST_READY, this.o.kvmProbeTimeoutMs ?? 8000, { alive: () => child.exitCode === null, what: "the KVM probe guest" });
            result = "kvm";
          } catch {
            result = "tcg";
          } finally {
            child.kill("SIGKILL");
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
      try {
        mkdirSync(this.guestDir, { recursive: true });
        writeFileSync(cacheFile, JSON.stringify({ key, accelerator: result, probedAt: new Date().toISOString() }));
      } catch {}
      return result;
    })();
    try {
      this.accel = await this.probing;
    } catch (e) {
      // A probe that could not run (no guest yet) is tried again by the next start.
      this.probing = undefined;
      throw e;
    }
    return this.accel;
  }

  private state(instance: DriverInstance): QemuState {
    instance.extra ??= {};
    const s = instance.extra as Partial<QemuState>;
    s.slots ??= {};
    s.forwards ??= [];
    return s as QemuState;
  }

  private netdev(forwards: QemuState["forwards"], ctx: StartContext): string {
    // slirp only forwards addresses inside its own network, so the guest network is the
    // 169.254.169.0/24 link-local block and 169.254.169.254:80 a guestfwd to this VM's endpoint.
    const parts = ["user", "id=net0", "net=169.254.169.0/24", "host=169.254.169.2", "dns=169.254.169.3", "dhcpstart=169.254.169.15"];
    if (!this.o.outbound) parts.push("restrict=on");
    for (const f of forwards) parts.push(`hostfwd=${f.protocol}:127.0.0.1:${f.hostPort}-:${f.guestPort}`);
    if (ctx.metadataEndpoint) {
      // cmd: runs one connector per guest connection (a chardev target would be one shared stream).
      parts.push(`guestfwd=tcp:169.254.169.254:80-cmd:socat - TCP:${ctx.metadataEndpoint.host}:${ctx.metadataEndpoint.port}`);
    }
    return parts.join(",");
  }

  private async resolveForwards(network: NetworkSpec | undefined): Promise<QemuState["forwards"]> {
    const out: QemuState["forwards"] = [];
    for (const f of network?.portForwards ?? []) {
      const protocol = f.protocol || "tcp";
      if (protocol !== "tcp" && protocol !== "udp") throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_ARGUMENT", `port forward protocol ${protocol} is not tcp or udp`, "network.port_forwards");
      out.push({ protocol, hostPort: f.hostPort || (await freeLoopbackPort()), guestPort: f.guestPort });
    }
    return out;
  }

  async start(spec: InstanceSpec, dir: string, events: DriverEvents, ctx: StartContext = {}): Promise<DriverInstance> {
    const { kernel, initrd } = await this.ensureGuest();
    const accel = await this.probeAccelerator();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const qmpPath = path.join(dir, "qmp.sock");
    const consolePath = path.join(dir, "console.log");
    rmSync(qmpPath, { force: true });
    rmSync(consolePath, { force: true });
    const forwards = await this.resolveForwards(spec.network);
    if (ctx.metadataEndpoint && !existsSync("/usr/bin/socat")) {
      throw new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", "the qemu driver forwards the metadata endpoint with socat (apt-get install socat)");
    }
    const mem = Math.max(96, Number(spec.resources?.memoryMib ?? 256));
    const args = [
      "-name", `trustplane-${spec.vmId}`,
      "-M", "q35",
      "-accel", accel,
      "-cpu", accel === "kvm" ? "host" : "max",
      "-m", String(mem),
      "-smp", String(Math.max(1, spec.resources?.vcpus ?? 1)),
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-kernel", kernel,
      "-initrd", initrd,
      "-append", ["console=ttyS0", "quiet", "panic=-1", ...(spec.network?.mode === "none" ? ["trustplane.net=0"] : []), ...(this.o.kernelArgs ?? [])].join(" "),
      "-serial", `file:${consolePath}`,
      "-qmp", `unix:${qmpPath},server=on,wait=off`,
      ...Array.from({ length: HOTPLUG_SLOTS }, (_, i) => ["-device", `pcie-root-port,id=hp${i},chassis=${i + 1},slot=${i + 1}`]).flat(),
    ];
    if (spec.network?.mode !== "none") args.push("-netdev", this.netdev(forwards, ctx), "-device", "virtio-net-pci,netdev=net0");
    const started = Date.now();
    const child = spawn(this.o.binary ?? "qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const spawnError = new Promise<never>((_, reject) => child.once("error", (e) => reject(new TrustplaneError("FAILED_PRECONDITION", "DRIVER_UNAVAILABLE", `cannot run qemu: ${e.message}`))));
    spawnError.catch(() => undefined);
    const instance: DriverInstance = {
      vmId: spec.vmId,
      pid: child.pid ?? 0,
      cmdlineMarker: `trustplane-${spec.vmId}`,
      dir,
      accelerator: accel,
      extra: { slots: {}, forwards },
      network: { mode: spec.network?.mode || "user", portForwards: forwards.map((f) => ({ ...f })) },
    };
    try {
      const watcher = new ConsoleWatcher(consolePath);
      const qmp = await Promise.race([QmpClient.connect(qmpPath, 10_000), spawnError]);
      this.adopt(instance, qmp, events);
      await watcher.waitFor(GUEST_READY, this.o.bootTimeoutMs ?? 90_000, { alive: () => child.exitCode === null && child.signalCode === null, what: `qemu ${spec.vmId} (${stderr.trim().slice(-200)})` });
      this.bootMs.set(spec.vmId, Date.now() - started);
    } catch (e) {
      this.qmp.get(spec.vmId)?.close();
      this.qmp.delete(spec.vmId);
      try {
        process.kill(child.pid!, "SIGKILL");
      } catch {}
      throw e;
    }
    child.stderr!.destroy();
    child.unref();
    return instance;
  }

  /** Subscribes to a QMP connection's events: a guest poweroff or QEMU exit reaches the control plane. */
  private adopt(instance: DriverInstance, qmp: QmpClient, events: DriverEvents): void {
    this.qmp.set(instance.vmId, qmp);
    qmp.on("event", (e: QmpEvent) => {
      if (e.event === "SHUTDOWN") events.exited(instance.vmId, `guest shut down (${String(e.data.reason ?? "shutdown")})`);
      else if (e.event === "STOP") events.suspended?.(instance.vmId, "QMP STOP: vCPUs stopped");
      else if (e.event === "RESUME") events.resumed?.(instance.vmId, "QMP RESUME: vCPUs resumed");
      else if (e.event === "POWERDOWN") events.note?.(instance.vmId, "POWERDOWN", "ACPI powerdown requested");
      else if (e.event === "DEVICE_DELETED" && typeof e.data.device === "string") void this.deviceDeleted(instance, qmp, e.data.device, events);
    });
    qmp.once("close", () => {
      if (this.qmp.get(instance.vmId) === qmp) this.qmp.delete(instance.vmId);
      // The socket closes when QEMU exits for any reason (crash, SIGKILL).
      setTimeout(() => {
        if (!processAlive(instance.pid, instance.cmdlineMarker)) events.exited(instance.vmId, "qemu process exited");
      }, 100);
    });
  }

  /**
   * A DEVICE_DELETED nobody is waiting for: the guest released a volume after its detach timed
   * out. Finish the detach (drop the block node, free the slot) and tell the control plane.
   */
  private async deviceDeleted(instance: DriverInstance, qmp: QmpClient, device: string, events: DriverEvents): Promise<void> {
    const volumeId = device.startsWith("dev-") ? device.slice(4) : "";
    const st = this.state(instance);
    if (!volumeId || this.detaching.has(`${instance.vmId}/${volumeId}`) || !(volumeId in st.slots)) return;
    await qmp.execute("blockdev-del", { "node-name": `vol-${volumeId}` }).catch(() => undefined);
    delete st.slots[volumeId];
    events.deviceRemoved?.(instance.vmId, volumeId, `QMP DEVICE_DELETED: the guest released ${volumeId}`);
  }

  /** After an agent restart: reconnect to a still-running QEMU's QMP socket. */
  async reattach(instance: DriverInstance, events: DriverEvents): Promise<void> {
    const qmp = await QmpClient.connect(path.join(instance.dir, "qmp.sock"), 5000);
    this.adopt(instance, qmp, events);
  }

  /** Agent shutdown: lets go of every QMP connection (QEMU serves one client at a time). */
  close(): void {
    for (const q of this.qmp.values()) q.close();
    this.qmp.clear();
  }

  /** The instance's QMP client (used by the privileged-operations executor too). */
  async monitor(instance: DriverInstance): Promise<QmpClient> {
    const existing = this.qmp.get(instance.vmId);
    if (existing && !existing.closed) return existing;
    if (!processAlive(instance.pid, instance.cmdlineMarker)) throw new TrustplaneError("FAILED_PRECONDITION", "INVALID_STATE", `qemu for ${instance.vmId} is not running`);
    const qmp = await QmpClient.connect(path.join(instance.dir, "qmp.sock"), 5000);
    this.qmp.set(instance.vmId, qmp);
    return qmp;
  }

  async stop(instance: DriverInstance, timeoutMs: number, force: boolean): Promise<StopResult> {
    const alive = () => processAlive(instance.pid, instance.cmdlineMarker);
    let forced = force;
    if (alive()) {
      const qmp = await this.monitor(instance).catch(() => undefined);
      if (!force && qmp) {
        // ACPI power button: the guest shuts itself down; quit only when it does not in time.
        await qmp.execute("system_powerdown").catch(() => undefined);
        if (!(await waitForExit(instance.pid, timeoutMs))) {
          forced = true;
          await qmp.execute("quit", undefined, 5000).catch(() => undefined);
        }
      } else if (qmp) {
        await qmp.execute("quit", undefined, 5000).catch(() => undefined);
      }
      if (!(await waitForExit(instance.pid, 5000))) {
        try {
          process.kill(instance.pid, "SIGKILL");
        } catch {}
        if (!(await waitForExit(instance.pid, 5000))) throw new TrustplaneError("INTERNAL", "STOP_FAILED", `qemu for ${instance.vmId} (pid ${instance.pid}) survived SIGKILL`);
      }
    }
    this.qmp.get(instance.vmId)?.close();
    this.qmp.delete(instance.vmId);
    rmSync(path.join(instance.dir, "qmp.sock"), { force: true });
    return { forced };
  }

  async attachVolume(instance: DriverInstance, volume: VolumeSpec): Promise<{ device: string }> {
    if (!/^[a-z0-9-]{1,63}$/.test(volume.volumeId)) throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_ARGUMENT", `volume id ${JSON.stringify(volume.volumeId)} must be [a-z0-9-], at most 63 characters`, "volume.volume_id");
    const st = this.state(instance);
    const used = new Set(Object.values(st.slots));
    const slot = Array.from({ length: HOTPLUG_SLOTS }, (_, i) => i).find((i) => !used.has(i));
    if (slot === undefined) throw new TrustplaneError("RESOURCE_EXHAUSTED", "NO_HOTPLUG_SLOT", `${instance.vmId} already has ${HOTPLUG_SLOTS} hot-plugged volumes; detach one first`, "volume");
    const volDir = path.join(instance.dir, "volumes");
    mkdirSync(volDir, { recursive: true, mode: 0o700 });
    const file = path.join(volDir, `${volume.volumeId}.qcow2`);
    if (!existsSync(file)) await run("qemu-img", ["create", "-q", "-f", "qcow2", file, `${Math.max(1, volume.sizeGib)}G`]);
    const qmp = await this.monitor(instance);
    const watcher = new ConsoleWatcher(path.join(instance.dir, "console.log"));
    watcher.poll();
    const before = new Set(blockDevices(watcher.lines));
    const node = `vol-${volume.volumeId}`;
    await qmp.execute("blockdev-add", { "node-name": node, driver: "qcow2", "read-only": volume.readOnly, file: { driver: "file", filename: file, "read-only": volume.readOnly } });
    try {
      await qmp.execute("device_add", { driver: "virtio-blk-pci", id: `dev-${volume.volumeId}`, drive: node, bus: `hp${slot}` });
    } catch (e) {
      await qmp.execute("blockdev-del", { "node-name": node }).catch(() => undefined);
      throw e;
    }
    st.slots[volume.volumeId] = slot;
    // The guest reports /sys/block changes on its console about once a second.
    let device = "";
    const deadline = Date.now() + 5000;
    while (!device && Date.now() < deadline) {
      watcher.poll();
      device = blockDevices(watcher.lines).find((d) => !before.has(d)) ?? "";
      if (!device) await new Promise((r) => setTimeout(r, 200));
    }
    return { device };
  }

  async detachVolume(instance: DriverInstance, volumeId: string, timeoutMs: number): Promise<void> {
    const st = this.state(instance);
    const qmp = await this.monitor(instance);
    const id = `dev-${volumeId}`;
    const key = `${instance.vmId}/${volumeId}`;
    const deleted = qmp.waitForEvent("DEVICE_DELETED", (e) => e.data.device === id, timeoutMs);
    deleted.catch(() => undefined);
    this.detaching.add(key);
    try {
      await qmp.execute("device_del", { id });
      try {
        await deleted;
      } catch (e) {
        // The unplug request stands: when the guest lets go later, deviceDeleted finishes it.
        throw new TrustplaneError("DEADLINE_EXCEEDED", "DETACH_TIMEOUT", `the guest did not release ${volumeId} within ${timeoutMs} ms; it stays attached until the guest lets go (or the VM stops) (${(e as Error).message})`, "volume_id");
      }
      await qmp.execute("blockdev-del", { "node-name": `vol-${volumeId}` });
      delete st.slots[volumeId];
    } finally {
      this.detaching.delete(key);
    }
  }

  async configureNetwork(instance: DriverInstance, network: NetworkSpec): Promise<NetworkSpec> {
    const st = this.state(instance);
    const qmp = await this.monitor(instance);
    const next = await this.resolveForwards(network);
    // QEMU 7.2 has no QMP command for slirp forwards; hostfwd_add/remove are HMP only.
    for (const f of st.forwards) await qmp.execute("human-monitor-command", { "command-line": `hostfwd_remove net0 ${f.protocol}:127.0.0.1:${f.hostPort}` });
    for (const f of next) {
      const out = await qmp.execute<string>("human-monitor-command", { "command-line": `hostfwd_add net0 ${f.protocol}:127.0.0.1:${f.hostPort}-:${f.guestPort}` });
      if (out.trim()) throw new TrustplaneError("FAILED_PRECONDITION", "NETWORK_CONFIG_FAILED", `hostfwd ${f.hostPort}->${f.guestPort}: ${out.trim()}`, "network");
    }
    st.forwards = next;
    instance.network = { mode: network.mode || "user", portForwards: next.map((f) => ({ protocol: f.protocol, hostPort: f.hostPort, guestPort: f.guestPort })) };
    return instance.network;
  }

  async pause(instance: DriverInstance): Promise<void> {
    await (await this.monitor(instance)).execute("stop");
  }

  async resume(instance: DriverInstance): Promise<void> {
    await (await this.monitor(instance)).execute("cont");
  }

  // Helpers for privileged operations (memory inspection, hypervisor state).

  /** Writes `size` bytes of guest physical memory at `addr` to `file` (QMP pmemsave). */
  async pmemsave(instance: DriverInstance, addr: number, size: number, file: string): Promise<void> {
    await (await this.monitor(instance)).execute("pmemsave", { val: addr, size, filename: file });
  }

  /** Writes `size` bytes of guest virtual memory of vCPU `cpu` at `addr` to `file` (QMP memsave). */
  async memsave(instance: DriverInstance, addr: number, size: number, file: string, cpu = 0): Promise<void> {
    await (await this.monitor(instance)).execute("memsave", { val: addr, size, filename: file, "cpu-index": cpu });
  }

  async queryStatus(instance: DriverInstance): Promise<{ running: boolean; status: string }> {
    return (await this.monitor(instance)).execute("query-status");
  }

  async queryVersion(instance: DriverInstance): Promise<{ qemu: { major: number; minor: number; micro: number }; package: string }> {
    return (await this.monitor(instance)).execute("query-version");
  }

  /** PCI devices and block nodes as QEMU sees them. */
  async listDevices(instance: DriverInstance): Promise<{ pci: unknown; block: unknown }> {
    const qmp = await this.monitor(instance);
    return { pci: await qmp.execute("query-pci"), block: await qmp.execute("query-named-block-nodes") };
  }
}

/** The latest /sys/block listing a guest printed (TRUSTPLANE-BLOCK: vda vdb ...). */
export function blockDevices(lines: readonly string[]): string[] {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^TRUSTPLANE-BLOCK:(.*)$/.exec(lines[i]!);
    if (m) return m[1]!.trim().split(/\s+/).filter(Boolean);
  }
  return [];
}
