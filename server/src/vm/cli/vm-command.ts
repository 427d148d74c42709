// `trustplane vm …` and `trustplane hypervisors`: the VM command set from the terminal, with
// a table for lists, live state for watch and the capability matrix as a grid.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Feature, HypervisorType, VmEventType, VmServiceService, VmState, type Vm } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { CLIENT_OPTIONS, client, parse, print, requirePositional, type Command } from "../../cli/cli-context.js";
import { renderTable } from "../../cli/table.js";

const hv = (h: HypervisorType) => HypervisorType[h]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? "?";
const st = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? "?";

function feature(f: string): Feature {
  const v = Feature[`FEATURE_${f.toUpperCase().replace(/-/g, "_")}` as keyof typeof Feature];
  if (v === undefined) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown feature ${f}; use block-hotplug, fast-start or memory-inspection`, "feature");
  return v as Feature;
}

function vmLine(vm: Vm): string {
  return [
    `${vm.vmId}  ${vm.name}  ${st(vm.state)}${vm.failureReason ? ` (${vm.failureReason})` : ""}`,
    `  image ${vm.image} on ${hv(vm.hypervisor)}${vm.accelerator ? ` [${vm.accelerator}]` : ""}, host ${vm.hostId || "-"}`,
    `  why: ${vm.hypervisorReason}${vm.suggestion ? `\n  suggestion: ${vm.suggestion}` : ""}`,
  ].join("\n");
}

export const vmCommand: Command = {
  name: "vm",
  summary: "Create and control VMs: create, list, get, start, stop, terminate, attach, detach, watch.",
  usage:
    "trustplane vm create NAME [--image process|tiny-linux] [--hypervisor qemu|sandbox] [--vcpus N] [--memory MiB] [--feature F]… [--command ARG]… | list | get ID | start ID | stop ID [--timeout S] [--force] | terminate ID | attach ID --volume V --size GiB | detach ID --volume V | watch [ID]",
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      image: { type: "string" },
      hypervisor: { type: "string" },
      vcpus: { type: "string" },
      memory: { type: "string" },
      feature: { type: "string", multiple: true },
      command: { type: "string", multiple: true },
      timeout: { type: "string" },
      force: { type: "boolean" },
      volume: { type: "string" },
      size: { type: "string" },
    });
    const vms = client(VmServiceService, values);
    const rid = (what: string) => `cli-${what}-${Date.now()}`;
    try {
      const sub = positionals[0];
      const id = () => requirePositional(this, positionals, 1, "VM id");
      switch (sub) {
        case "create": {
          const name = requirePositional(this, positionals, 1, "VM NAME");
          const hypervisor = values.hypervisor
            ? HypervisorType[`HYPERVISOR_TYPE_${values.hypervisor.toUpperCase()}` as keyof typeof HypervisorType]
            : HypervisorType.HYPERVISOR_TYPE_UNSPECIFIED;
          if (hypervisor === undefined) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--hypervisor must be qemu or sandbox", "hypervisor");
          const { vm } = await vms.createVm({
            requestId: rid(`create-${name}`),
            name,
            image: values.image ?? "process",
            hypervisor: hypervisor as HypervisorType,
            resources: { vcpus: Number(values.vcpus ?? 1), memoryMib: Number(values.memory ?? 256), diskGib: 0 },
            requiredFeatures: (values.feature ?? []).map(feature),
            command: values.command ?? [],
          });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "list": {
          const { vms: list } = await vms.listVms({ pageSize: 1000 });
          print(values, list, () =>
            renderTable(
              ["ID", "NAME", "STATE", "HYPERVISOR", "HOST", "IMAGE", "VCPU", "MEM MiB"],
              list.map((v) => [v.vmId, v.name, st(v.state), hv(v.hypervisor), v.hostId || "-", v.image, v.resources?.vcpus ?? 0, v.resources?.memoryMib ?? 0]),
            ),
          );
          break;
        }
        case "get": {
          const { vm } = await vms.getVm({ vmId: id() });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "start":
        case "terminate": {
          const res = sub === "start" ? await vms.startVm({ requestId: rid(sub), vmId: id() }) : await vms.terminateVm({ requestId: rid(sub), vmId: id() });
          print(values, res.vm, () => vmLine(res.vm!));
          break;
        }
        case "stop": {
          const { vm } = await vms.stopVm({ requestId: rid("stop"), vmId: id(), timeoutSeconds: Number(values.timeout ?? 30), force: values.force ?? false });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "attach": {
          if (!values.volume) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--volume NAME is required", "volume");
          const res = await vms.attachVolume({ requestId: rid("attach"), vmId: id(), volume: { volumeId: values.volume, sizeGib: Number(values.size ?? 1), readOnly: false } });
          print(values, res, () => `attached ${values.volume} as ${res.device || "?"}\n${vmLine(res.vm!)}`);
          break;
        }
        case "detach": {
          if (!values.volume) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--volume NAME is required", "volume");
          const { vm } = await vms.detachVolume({ requestId: rid("detach"), vmId: id(), volumeId: values.volume, timeoutSeconds: 10 });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "watch": {
          const stream = vms.watchVmEvents({ vmId: positionals[1] ?? "", afterSeq: 0 });
          process.once("SIGINT", () => stream.cancel());
          process.stderr.write("watching VM events (Ctrl-C to stop)\n");
          try {
            for await (const { event } of stream) {
              const e = event!;
              const type = (VmEventType[e.type] ?? "").replace("VM_EVENT_TYPE_", "");
              process.stdout.write(
                values.json ? JSON.stringify(e) + "\n" : `${new Date(e.timeMs).toISOString()}  ${e.vmId}  ${st(e.state).padEnd(11)} ${type.padEnd(14)} ${e.detail}  (by ${e.initiator})\n`,
              );
            }
          } catch (e) {
            if (!(e instanceof TrustplaneError && e.status === "CANCELLED")) throw e;
          }
          break;
        }
        default:
          throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(sub ?? "")}\nusage: ${this.usage}`);
      }
    } finally {
      vms.close();
    }
  },
};

export const hypervisorsCommand: Command = {
  name: "hypervisors",
  summary: "The capability matrix: every host's drivers, their operations, features and accelerator.",
  usage: "trustplane hypervisors [--json]",
  async run(argv) {
    const { values } = parse(this, argv, CLIENT_OPTIONS);
    const vms = client(VmServiceService, values);
    try {
      const { hosts } = await vms.getCapabilities({});
      const ops = ["create", "start", "stop", "terminate", "attachVolume", "detachVolume", "configureNetwork", "pause", "resume"];
      print(values, hosts, () =>
        renderTable(
          ["HOST", "DRIVER", "ACCEL", ...ops, "FEATURES"],
          hosts.flatMap((h) =>
            h.drivers.map((d) => [
              h.hostId,
              hv(d.hypervisor),
              d.accelerator,
              ...ops.map((o) => (d.operations.includes(o) ? "✓" : "·")),
              d.features.map((f) => (Feature[f] ?? "").replace("FEATURE_", "").toLowerCase()).join(",") || "-",
            ]),
          ),
        ),
      );
    } finally {
      vms.close();
    }
  },
};
