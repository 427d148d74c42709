// The areas each process runs. An area that lands adds itself here (one line each) and
// moves its services out of service-catalog.ts's not-yet-implemented lists.
import type { AgentArea, ServerArea } from "./area.js";
import { tokenAgentArea } from "../token/agent/token-agent-area.js";
import { tokenServerArea } from "../token/authority/token-server-area.js";
import { jobServerArea } from "../job/job-area.js";

export const SERVER_AREAS: ServerArea[] = [tokenServerArea, jobServerArea];

export const AGENT_AREAS: AgentArea[] = [tokenAgentArea];
