// A VM's network as the customer asks for it (seed 004: user-mode networking with port
// forwards): checked at the edge for CreateVm and ConfigureNetwork alike. host_port 0 asks the
// host to pick a free port; the VM record then holds the port the host chose.
import { invalidArgument } from "../../../../sdk/src/errors.js";
import type { NetworkSpec } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

const MODES = ["user", "none"];

/** The network to record: mode defaulted to "user", forwards checked (INVALID_ARGUMENT naming the forward). */
export function checkNetwork(field: string, network: NetworkSpec | undefined): NetworkSpec {
  const mode = network?.mode || "user";
  if (!MODES.includes(mode)) throw invalidArgument(`${field}.mode`, `unknown mode ${JSON.stringify(mode)}; use ${MODES.join(" or ")}`);
  const forwards = network?.portForwards ?? [];
  if (mode === "none" && forwards.length) throw invalidArgument(`${field}.port_forwards`, 'mode "none" has no network to forward ports into; use mode "user"');
  const taken = new Set<string>();
  forwards.forEach((pf, i) => {
    const at = `${field}.port_forwards[${i}]`;
    const protocol = pf.protocol || "tcp";
    if (protocol !== "tcp" && protocol !== "udp") throw invalidArgument(`${at}.protocol`, `must be tcp or udp, got ${JSON.stringify(pf.protocol)}`);
    if (!Number.isInteger(pf.hostPort) || pf.hostPort < 0 || pf.hostPort > 65535) throw invalidArgument(`${at}.host_port`, `must be 1..65535, or 0 to let the host pick a free port; got ${pf.hostPort}`);
    if (!Number.isInteger(pf.guestPort) || pf.guestPort < 1 || pf.guestPort > 65535) throw invalidArgument(`${at}.guest_port`, `must be 1..65535, got ${pf.guestPort}`);
    const key = `${protocol}:${pf.hostPort}`;
    if (pf.hostPort !== 0 && taken.has(key)) throw invalidArgument(`${at}.host_port`, `${protocol} host port ${pf.hostPort} is forwarded twice`);
    taken.add(key);
  });
  return { mode, portForwards: forwards.map((pf) => ({ protocol: pf.protocol || "tcp", hostPort: pf.hostPort, guestPort: pf.guestPort })) };
}

/** "tcp 127.0.0.1:34567→8080, …" for event details and the CLI. */
export function describeForwards(network: NetworkSpec | undefined): string {
  const f = network?.portForwards ?? [];
  return f.length ? f.map((pf) => `${pf.protocol} 127.0.0.1:${pf.hostPort}→${pf.guestPort}`).join(", ") : "no port forwards";
}
