// Which generated services each process binds before their area lands: every method answers
// UNIMPLEMENTED naming its area, so clients get a clear answer instead of a transport error.
import type * as grpc from "@grpc/grpc-js";

/** Server-side services whose areas have not landed yet. */
export const UNIMPLEMENTED_SERVER_SERVICES: grpc.ServiceDefinition[] = [];

/** Agent-side services whose areas have not landed yet. */
export const UNIMPLEMENTED_AGENT_SERVICES: grpc.ServiceDefinition[] = [];
