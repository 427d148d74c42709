// Which generated services each process binds before their area lands: every method answers
// UNIMPLEMENTED naming its area (after the call verified), so clients get a clear answer
// instead of a transport error. An area moves its service out of here when it lands.
import type * as grpc from "@grpc/grpc-js";

/** Server-side services whose areas have not landed yet. */
export const UNIMPLEMENTED_SERVER_SERVICES: grpc.ServiceDefinition[] = [];

/** Agent-side services whose areas have not landed yet. */
export const UNIMPLEMENTED_AGENT_SERVICES: grpc.ServiceDefinition[] = [];

/** "trustplane.vm.v1.VmService" from any method path of the service. */
export function serviceName(service: grpc.ServiceDefinition): string {
  const first = Object.values(service)[0] as { path: string } | undefined;
  return first ? first.path.split("/")[1]! : "";
}
