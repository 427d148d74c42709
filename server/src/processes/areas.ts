// The areas each process runs. An area that lands adds itself here (one line each) and
// moves its services out of service-catalog.ts's not-yet-implemented lists.
import type { AgentArea, ServerArea } from "./area.js";

export const SERVER_AREAS: ServerArea[] = [];

export const AGENT_AREAS: AgentArea[] = [];
