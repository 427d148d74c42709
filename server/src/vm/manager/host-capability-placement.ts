// Placement over the hosts that joined: each host's capability matrix comes from its own
// agent (GetHostCapabilities, cached briefly); a host qualifies when one of its drivers runs
// the image with every required feature; the least-loaded qualifying host wins and the rest
// are kept as alternates. Claims are recorded per VM so terminate/failure release them.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Feature, HypervisorType, type HostCapabilities } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { Logger } from "../../runtime/logger.js";
import type { Storage } from "../../runtime/storage/storage.js";
import type { Placement, PlacementDecision, PlacementRequest } from "./placement.js";
import { imageInfo } from "./vm-images.js";
import type { HostControlClient } from "./vm-service.js";

const name = (h: HypervisorType) => HypervisorType[h]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? String(h);
const featureName = (f: Feature) => Feature[f]?.replace("FEATURE_", "").toLowerCase() ?? String(f);

export class HostCapabilityPlacement implements Placement {
  private readonly cache = new Map<string, { caps: HostCapabilities; until: number }>();
  private readonly claims = new Map<string, string>();

  constructor(
    private readonly storage: Storage,
    private readonly hostControl: (hostId: string) => Promise<HostControlClient>,
    private readonly logger: Logger,
    private readonly ttlMs = 30_000,
  ) {}

  private async hostCaps(hostId: string): Promise<HostCapabilities | undefined> {
    const hit = this.cache.get(hostId);
    if (hit && hit.until > Date.now()) return hit.caps;
    try {
      const c = await this.hostControl(hostId);
      const { capabilities } = await c.getHostCapabilities({}, { deadlineMs: 3000 });
      if (!capabilities) return undefined;
      this.cache.set(hostId, { caps: capabilities, until: Date.now() + this.ttlMs });
      return capabilities;
    } catch (e) {
      this.logger.warn({ hostId, err: (e as Error).message }, "host did not report capabilities; skipping it");
      return undefined;
    }
  }

  async capabilities(): Promise<HostCapabilities[]> {
    const out: HostCapabilities[] = [];
    for (const h of await this.storage.hosts.list()) {
      const c = await this.hostCaps(h.hostId);
      if (c) out.push(c);
    }
    return out;
  }

  async place(req: PlacementRequest): Promise<PlacementDecision> {
    const image = imageInfo(req.image);
    const hosts = await this.capabilities();
    const supports = (caps: HostCapabilities, hv: HypervisorType) => {
      const d = caps.drivers.find((x) => x.hypervisor === hv);
      return d !== undefined && req.features.every((f) => d.features.includes(f));
    };
    const candidates = req.hypervisor ? [req.hypervisor] : image.hypervisors;
    if (req.hypervisor && !image.hypervisors.includes(req.hypervisor)) {
      throw new TrustplaneError("INVALID_ARGUMENT", "UNSUITABLE_HYPERVISOR", `image ${image.name} cannot run on ${name(req.hypervisor)}; it runs on ${image.hypervisors.map(name).join(", ")}`, "hypervisor");
    }
    const eliminated: string[] = [];
    for (const hv of candidates) {
      const fits = hosts.filter((h) => supports(h, hv));
      if (fits.length === 0) {
        const withDriver = hosts.filter((h) => h.drivers.some((d) => d.hypervisor === hv)).length;
        eliminated.push(`${name(hv)}: ${hosts.length - withDriver} of ${hosts.length} hosts lack the driver${withDriver ? `, ${withDriver} lack ${req.features.map(featureName).join("+")}` : ""}`);
        continue;
      }
      const load = (h: HostCapabilities) => [...this.claims.values()].filter((x) => x === h.hostId).length;
      fits.sort((a, b) => load(a) - load(b) || (a.hostId < b.hostId ? -1 : 1));
      const chosen = fits[0]!;
      this.claims.set(req.vmId, chosen.hostId);
      const reason = req.hypervisor
        ? `${name(hv)} as requested`
        : `${name(hv)}: image ${image.name} (${image.os}) runs on ${image.hypervisors.map(name).join("/")}${req.features.length ? `, with ${req.features.map(featureName).join("+")}` : ""}; least-loaded host`;
      return { hostId: chosen.hostId, alternates: fits.slice(1, 4).map((h) => h.hostId), hypervisor: hv, reason };
    }
    throw new TrustplaneError("RESOURCE_EXHAUSTED", "NO_VALID_HOST", `no host fits: ${eliminated.join("; ") || "no hosts have joined"}`);
  }

  async reclaim(vmId: string, hostId: string): Promise<boolean> {
    this.claims.set(vmId, hostId);
    return true;
  }

  async release(vmId: string): Promise<void> {
    this.claims.delete(vmId);
  }
}
