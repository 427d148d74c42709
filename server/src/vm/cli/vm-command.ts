// `trustplane vm …` and `trustplane hypervisors`: the VM command set from the terminal, with
// a table for lists (every page, or one with --page-size/--page-token), live state for watch
// (vm-watch-view.ts) and the capability matrix as a grid.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { Feature, HypervisorType, VmServiceService, VmState, type Vm } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { CLIENT_OPTIONS, client, parse, print, requirePositional, type Command } from "../../cli/cli-context.js";
import { renderTable } from "../../cli/table.js";
import { featureFlag, forwardFlag, hypervisorFlag, intFlag, stateFlag, volumeFlag } from "./vm-spec-flags.js";
import { VmWatchView } from "./vm-watch-view.js";

const hv = (h: HypervisorType) => HypervisorType[h]?.replace("HYPERVISOR_TYPE_", "").toLowerCase() ?? "?";
const st = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? "?";

function vmLine(vm: Vm): string {
  const forwards = vm.network?.portForwards.map((f) => `${f.protocol} 127.0.0.1:${f.hostPort}→${f.guestPort}`).join(", ");
  return [
    `${vm.vmId}  ${vm.name}  ${st(vm.state)}${vm.failureReason ? ` (${vm.failureReason})` : ""}`,
    `  image ${vm.image} on ${hv(vm.hypervisor)}${vm.accelerator ? ` [${vm.accelerator}]` : ""}, host ${vm.hostId || "-"}${vm.region ? `, region ${vm.region}` : ""}`,
    ...(vm.volumes.length ? [`  volumes: ${vm.volumes.map((v) => `${v.volumeId} (${v.sizeGib} GiB${v.readOnly ? ", ro" : ""})`).join(", ")}`] : []),
    ...(forwards ? [`  forwards: ${forwards}`] : []),
    `  why: ${vm.hypervisorReason}${vm.suggestion ? `\n  suggestion: ${vm.suggestion}` : ""}`,
  ].join("\n");
}

export const vmCommand: Command = {
  name: "vm",
  summary: "Create and control VMs: create, list, get, start, stop, pause, resume, terminate, attach, detach, network, watch.",
  usage: [
    "trustplane vm create NAME [--image process|tiny-linux] [--hypervisor qemu|sandbox] [--vcpus N] [--memory MiB] [--region R]",
    "                          [--feature F]… [--volume ID:GIB[:ro]]… [--forward [tcp|udp:]HOST:GUEST]… [--command ARG]…",
    "       trustplane vm list [--state S] [--hypervisor H] [--region R] [--host ID] [--owner P] [--page-size N [--page-token T]]",
    "       trustplane vm get|start|pause|resume|terminate ID",
    "       trustplane vm stop ID [--timeout S] [--force]",
    "       trustplane vm attach ID --volume ID:GIB[:ro] | detach ID --volume ID [--timeout S]",
    "       trustplane vm network ID [--forward [tcp|udp:]HOST:GUEST]… [--mode user|none]",
    "       trustplane vm watch [ID]        (a live table on a terminal, one line per event otherwise)",
  ].join("\n"),
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      image: { type: "string" },
      hypervisor: { type: "string" },
      vcpus: { type: "string" },
      memory: { type: "string" },
      region: { type: "string" },
      feature: { type: "string", multiple: true },
      command: { type: "string", multiple: true },
      timeout: { type: "string" },
      force: { type: "boolean" },
      volume: { type: "string", multiple: true },
      forward: { type: "string", multiple: true },
      mode: { type: "string" },
      state: { type: "string" },
      host: { type: "string" },
      owner: { type: "string" },
      "page-size": { type: "string" },
      "page-token": { type: "string" },
    });
    const vms = client(VmServiceService, values);
    const rid = (what: string) => `cli-${what}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const oneVolume = () => {
      if (values.volume?.length !== 1) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "give exactly one --volume", "volume");
      return values.volume[0]!;
    };
    try {
      const sub = positionals[0];
      const id = () => requirePositional(this, positionals, 1, "VM id");
      switch (sub) {
        case "create": {
          const name = requirePositional(this, positionals, 1, "VM NAME");
          const forwards = (values.forward ?? []).map(forwardFlag);
          const { vm } = await vms.createVm({
            requestId: rid(`create-${name}`),
            name,
            image: values.image ?? "process",
            hypervisor: hypervisorFlag(values.hypervisor),
            resources: { vcpus: intFlag("--vcpus", values.vcpus, 1, 1, 64), memoryMib: intFlag("--memory", values.memory, 256, 16, 1024 * 1024), diskGib: 0 },
            region: values.region ?? "",
            requiredFeatures: (values.feature ?? []).map(featureFlag),
            volumes: (values.volume ?? []).map(volumeFlag),
            network: { mode: values.mode ?? "user", portForwards: forwards },
            command: values.command ?? [],
          });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "list": {
          const filters = { state: stateFlag(values.state), hypervisor: hypervisorFlag(values.hypervisor), region: values.region ?? "", hostId: values.host ?? "", owner: values.owner ?? "" };
          const one = values["page-size"] !== undefined || values["page-token"] !== undefined;
          const pageSize = intFlag("--page-size", values["page-size"], one ? 100 : 1000, 1, 1000);
          const list: Vm[] = [];
          let pageToken = values["page-token"] ?? "";
          let next = "";
          do {
            const page = await vms.listVms({ pageSize, pageToken, ...filters });
            list.push(...page.vms);
            next = page.nextPageToken;
            pageToken = next;
          } while (!one && pageToken);
          print(values, one ? { vms: list, nextPageToken: next } : list, () =>
            [
              renderTable(
                ["ID", "NAME", "STATE", "HYPERVISOR", "HOST", "REGION", "IMAGE", "VCPU", "MEM MiB"],
                list.map((v) => [v.vmId, v.name, st(v.state), hv(v.hypervisor), v.hostId || "-", v.region || "-", v.image, v.resources?.vcpus ?? 0, v.resources?.memoryMib ?? 0]),
              ),
              ...(one && next ? [`more: --page-token ${next}`] : []),
            ].join("\n"),
          );
          break;
        }
        case "get": {
          const { vm } = await vms.getVm({ vmId: id() });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "start":
        case "pause":
        case "resume":
        case "terminate": {
          const req = { requestId: rid(sub), vmId: id() };
          const res = sub === "start" ? await vms.startVm(req) : sub === "pause" ? await vms.pauseVm(req) : sub === "resume" ? await vms.resumeVm(req) : await vms.terminateVm(req);
          print(values, res.vm, () => vmLine(res.vm!));
          break;
        }
        case "stop": {
          const res = await vms.stopVm({ requestId: rid("stop"), vmId: id(), timeoutSeconds: intFlag("--timeout", values.timeout, 30, 1, 3600), force: values.force ?? false });
          print(values, res, () => `${res.forced ? "stopped by force" : "stopped gracefully"}\n${vmLine(res.vm!)}`);
          break;
        }
        case "attach": {
          const volume = volumeFlag(oneVolume());
          const res = await vms.attachVolume({ requestId: rid("attach"), vmId: id(), volume });
          print(values, res, () => `attached ${volume.volumeId} as ${res.device || "?"}\n${vmLine(res.vm!)}`);
          break;
        }
        case "detach": {
          const { vm } = await vms.detachVolume({ requestId: rid("detach"), vmId: id(), volumeId: oneVolume(), timeoutSeconds: intFlag("--timeout", values.timeout, 10, 1, 3600) });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "network": {
          const { vm } = await vms.configureNetwork({ requestId: rid("network"), vmId: id(), network: { mode: values.mode ?? "user", portForwards: (values.forward ?? []).map(forwardFlag) } });
          print(values, vm, () => vmLine(vm!));
          break;
        }
        case "watch": {
          const stream = vms.watchVmEvents({ vmId: positionals[1] ?? "", afterSeq: 0 });
          process.once("SIGINT", () => stream.cancel());
          const view = new VmWatchView(process.stdout, values.json ? "json" : "auto");
          if (!view.live) process.stderr.write("watching VM events: current states first, then changes (Ctrl-C to stop)\n");
          try {
            for await (const { event } of stream) view.show(event!);
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
