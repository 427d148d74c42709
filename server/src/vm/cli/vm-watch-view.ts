// `trustplane vm watch` output (issue 4 CLI: live state for watch). On a terminal, a table of
// every watched VM's current state that redraws in place under a status line; elsewhere (a
// pipe, a log file) one plain line per event, so scripts can follow it; --json one object a line.
import { VmEventType, VmState, type VmEvent } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { renderTable } from "../../cli/table.js";

const st = (s: VmState) => VmState[s]?.replace("VM_STATE_", "") ?? "?";
const type = (t: VmEventType) => VmEventType[t]?.replace("VM_EVENT_TYPE_", "") ?? "?";
const time = (ms: number) => new Date(ms).toISOString().slice(11, 19);

export interface WatchOutput {
  isTTY?: boolean;
  write(s: string): unknown;
}

export class VmWatchView {
  private readonly vms = new Map<string, VmEvent>();
  private events = 0;

  constructor(
    private readonly out: WatchOutput,
    private readonly mode: "json" | "auto" = "auto",
  ) {}

  /** Whether this view redraws a table (a terminal) or appends lines. */
  get live(): boolean {
    return this.mode === "auto" && !!this.out.isTTY;
  }

  show(e: VmEvent): void {
    this.events++;
    if (this.mode === "json") return void this.out.write(JSON.stringify(e) + "\n");
    if (!this.live) return void this.out.write(VmWatchView.line(e) + "\n");
    if (e.state === VmState.VM_STATE_TERMINATED) this.vms.delete(e.vmId);
    else this.vms.set(e.vmId, e);
    this.redraw();
  }

  static line(e: VmEvent): string {
    return `${new Date(e.timeMs).toISOString()}  ${e.vmId}  ${st(e.state).padEnd(11)} ${type(e.type).padEnd(14)} ${e.detail}${e.initiator ? `  (by ${e.initiator})` : ""}`;
  }

  private redraw(): void {
    const rows = [...this.vms.values()]
      .sort((a, b) => (a.vmId < b.vmId ? -1 : 1))
      .map((e) => [e.vmId, st(e.state), type(e.type), e.detail, e.initiator || "-", time(e.timeMs)]);
    const table = renderTable(["VM", "STATE", "LAST EVENT", "DETAIL", "BY", "AT"], rows);
    const status = `${this.vms.size} VM${this.vms.size === 1 ? "" : "s"} · ${this.events} event${this.events === 1 ? "" : "s"} · updated ${time(Date.now())} · Ctrl-C to stop`;
    // Home, clear to the end of the screen, draw: the view stays in place as states change.
    this.out.write(`\x1b[H\x1b[J${table}\n\n${status}\n`);
  }
}
