// Hypervisor choice (issue 4): from the image's OS, the required features, what up hosts offer
// and cost; a reason for the VM record; suggestions and refusals when the customer's own choice
// is worse or cannot do what is asked.
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { Feature, HypervisorType } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { HostState, HypervisorOffer } from "../../server/src/vm/manager/host-inventory.js";
import { chooseHypervisor, hypervisorsForOs, type HypervisorChoiceRequest } from "../../server/src/vm/manager/hypervisor-choice.js";

const { HYPERVISOR_TYPE_QEMU: QEMU, HYPERVISOR_TYPE_SANDBOX: SANDBOX, HYPERVISOR_TYPE_UNSPECIFIED: ANY } = HypervisorType;
const { FEATURE_BLOCK_HOTPLUG: HOTPLUG, FEATURE_FAST_START: FAST, FEATURE_MEMORY_INSPECTION: MEMINSPECT } = Feature;

const qemu: HypervisorOffer = { hypervisor: QEMU, features: [HOTPLUG, MEMINSPECT, Feature.FEATURE_PAUSE], accelerator: "tcg", cost: 4 };
const sandbox: HypervisorOffer = { hypervisor: SANDBOX, features: [FAST], accelerator: "none", cost: 1 };

function host(id: string, hypervisors: HypervisorOffer[], up = true): HostState {
  return {
    hostId: id,
    region: "eu-1",
    total: { vcpus: 4, memoryMib: 8192, diskGib: 50 },
    used: { vcpus: 0, memoryMib: 0, diskGib: 0 },
    ratios: { cpu: 4, ram: 1, disk: 1 },
    hypervisors,
    load: 0,
    instanceCount: 0,
    latencyMs: 1,
    up,
    lastHeartbeatMs: 0,
  };
}

const both = [host("a", [qemu, sandbox]), host("b", [qemu, sandbox])];
const req = (over: Partial<HypervisorChoiceRequest>): HypervisorChoiceRequest => ({ os: "process", requested: ANY, features: [], hosts: both, ...over });

function refusal(fn: () => unknown): TrustplaneError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TrustplaneError);
    return e as TrustplaneError;
  }
  throw new Error("expected a refusal");
}

describe("the service chooses", () => {
  it("a full OS image needs qemu", () => {
    const c = chooseHypervisor(req({ os: "linux" }));
    expect(c.hypervisor).toBe(QEMU);
    expect(c.reason).toContain("os linux runs on qemu");
    expect(hypervisorsForOs("windows")).toEqual([QEMU]);
  });

  it("a process image goes to the cheaper sandbox, and says why", () => {
    const c = chooseHypervisor(req({}));
    expect(c.hypervisor).toBe(SANDBOX);
    expect(c.reason).toBe("sandbox: os process runs on sandbox/qemu; cost 1; on 2 up hosts; qemu costs 4");
    expect(c.suggestion).toBeUndefined();
  });

  it("fast start → sandbox; block hotplug → qemu; memory inspection → qemu", () => {
    expect(chooseHypervisor(req({ features: [FAST] })).hypervisor).toBe(SANDBOX);
    const hot = chooseHypervisor(req({ features: [HOTPLUG] }));
    expect(hot.hypervisor).toBe(QEMU);
    expect(hot.reason).toContain("requires block_hotplug");
    expect(hot.reason).toContain("sandbox lacks block_hotplug");
    expect(chooseHypervisor(req({ features: [MEMINSPECT] })).hypervisor).toBe(QEMU);
  });

  it("cost table overrides change the choice", () => {
    expect(chooseHypervisor(req({ costs: new Map([[QEMU, 0.5]]) })).hypervisor).toBe(QEMU);
  });

  it("availability: only drivers on up hosts count", () => {
    const onlyQemuUp = [host("a", [qemu]), host("b", [sandbox], false)];
    const c = chooseHypervisor(req({ hosts: onlyQemuUp }));
    expect(c.hypervisor).toBe(QEMU);
    expect(c.reason).toContain("sandbox on no up host");
    const err = refusal(() => chooseHypervisor(req({ os: "linux", hosts: [host("b", [sandbox])] })));
    expect(err).toMatchObject({ status: "RESOURCE_EXHAUSTED", reason: "NO_VALID_HOST" });
    expect(err.message).toContain("no up host offers qemu");
  });

  it("features no compatible hypervisor has are refused, naming what each lacks", () => {
    const err = refusal(() => chooseHypervisor(req({ os: "linux", features: [FAST] })));
    expect(err).toMatchObject({ status: "FAILED_PRECONDITION", reason: "UNSUPPORTED_FEATURE", field: "required_features" });
    expect(err.message).toContain("qemu lacks fast_start");
  });

  it("the image catalog's hypervisor list overrides the OS guess", () => {
    const err = refusal(() => chooseHypervisor(req({ compatible: [SANDBOX], features: [HOTPLUG] })));
    expect(err.reason).toBe("UNSUPPORTED_FEATURE");
  });
});

describe("the customer chooses", () => {
  it("sandbox + block hotplug is refused with a suggestion naming qemu", () => {
    const err = refusal(() => chooseHypervisor(req({ requested: SANDBOX, features: [HOTPLUG] })));
    expect(err).toMatchObject({ status: "FAILED_PRECONDITION", reason: "UNSUPPORTED_FEATURE" });
    expect(err.message).toBe("hypervisor sandbox cannot provide block_hotplug; qemu would fit: set hypervisor to qemu or leave it unspecified");
  });

  it("a hypervisor that cannot run the OS is an invalid argument with the one that can", () => {
    const err = refusal(() => chooseHypervisor(req({ os: "linux", requested: SANDBOX })));
    expect(err).toMatchObject({ status: "INVALID_ARGUMENT", reason: "UNSUITABLE_HYPERVISOR", field: "hypervisor" });
    expect(err.message).toContain("use qemu");
  });

  it("a choice that works but costs more is kept, with a suggestion", () => {
    const c = chooseHypervisor(req({ requested: QEMU, features: [] }));
    expect(c.hypervisor).toBe(QEMU);
    expect(c.reason).toBe("qemu as requested");
    expect(c.suggestion).toEqual({ hypervisor: SANDBOX, text: "sandbox also provides what is asked at cost 1 (vs 4)" });
  });

  it("a choice no up host offers is kept, with a suggestion naming an available one", () => {
    const c = chooseHypervisor(req({ requested: QEMU, hosts: [host("s", [sandbox])], costs: new Map([[QEMU, 0.1]]) }));
    expect(c.suggestion?.hypervisor).toBe(SANDBOX);
    expect(c.suggestion?.text).toContain("no up host offers qemu");
  });

  it("a choice that is already the best gets no suggestion", () => {
    expect(chooseHypervisor(req({ requested: QEMU, features: [HOTPLUG] })).suggestion).toBeUndefined();
    expect(chooseHypervisor(req({ requested: SANDBOX, features: [FAST] })).suggestion).toBeUndefined();
  });
});
