// The privileged operations (seed 002) by name, each with the operation class a CA certificate
// must allow for it, and which ones stream their output through the envelope format. Shared by
// the SDK (certificate options, streamed opening) and the agent's executor.
import type { PrivilegedRequest } from "../gen/trustplane/privileged/v1/privileged.js";

export type OperationName =
  | "read_guest_memory"
  | "dump_guest_memory"
  | "query_hypervisor"
  | "collect_host_diagnostics"
  | "stop_guest"
  | "start_guest"
  | "terminate_guest"
  | "apply_config_patch";

export type OperationClass = "lifecycle" | "inspect" | "memory" | "patch";

export const OPERATION_CLASSES: Readonly<Record<OperationName, OperationClass>> = {
  read_guest_memory: "memory",
  dump_guest_memory: "memory",
  query_hypervisor: "inspect",
  collect_host_diagnostics: "inspect",
  stop_guest: "lifecycle",
  start_guest: "lifecycle",
  terminate_guest: "lifecycle",
  apply_config_patch: "patch",
};

export const OPERATION_NAMES = Object.keys(OPERATION_CLASSES) as OperationName[];

/**
 * Operations that change something (a guest's state, the agent's configuration) or take guest
 * memory off the host: the agent audits each attempt durably before running it, so a crash
 * mid-operation still leaves a trace. The others only read host and hypervisor status.
 */
export const OPERATIONS_WITH_EFFECTS: ReadonlySet<OperationName> = new Set<OperationName>([
  "read_guest_memory",
  "dump_guest_memory",
  "stop_guest",
  "start_guest",
  "terminate_guest",
  "apply_config_patch",
]);

/** Memory reads up to this size come back inline in one sealed result; larger ones stream. */
export const INLINE_MEMORY_READ_MAX = 1024 * 1024;

const FIELDS: readonly [keyof PrivilegedRequest, OperationName][] = [
  ["readGuestMemory", "read_guest_memory"],
  ["dumpGuestMemory", "dump_guest_memory"],
  ["queryHypervisor", "query_hypervisor"],
  ["collectHostDiagnostics", "collect_host_diagnostics"],
  ["stopGuest", "stop_guest"],
  ["startGuest", "start_guest"],
  ["terminateGuest", "terminate_guest"],
  ["applyConfigPatch", "apply_config_patch"],
];

/** Which operation a request names, and the class a certificate must allow for it. */
export function operationOf(req: PrivilegedRequest): { name: OperationName; operationClass: OperationClass } | undefined {
  const found = FIELDS.find(([field]) => req[field] !== undefined);
  return found && { name: found[1], operationClass: OPERATION_CLASSES[found[1]] };
}

/** Whether the result of this request travels as a stream (SubmitStream), not inline. */
export function resultIsStreamed(req: PrivilegedRequest): boolean {
  if (req.dumpGuestMemory) return true;
  return req.readGuestMemory !== undefined && req.readGuestMemory.length > INLINE_MEMORY_READ_MAX;
}

/** The guest a request targets, for the audit ("" for host-wide operations). */
export function vmIdOf(req: PrivilegedRequest): string {
  const op = req.readGuestMemory ?? req.dumpGuestMemory ?? req.queryHypervisor ?? req.stopGuest ?? req.startGuest ?? req.terminateGuest;
  return op?.vmId ?? "";
}
