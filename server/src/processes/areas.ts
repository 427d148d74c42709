// The areas each process runs. An area that lands adds itself here (one line each) and
// moves its services out of service-catalog.ts's not-yet-implemented lists.
import type { AgentArea, ServerArea } from "./area.js";
import { tokenAgentArea } from "../token/agent/token-agent-area.js";
import { tokenServerArea } from "../token/authority/token-server-area.js";
import { jobServerArea } from "../job/job-area.js";
import { jobAgentArea } from "../job/bridge/job-bridge-area.js";
import { vmAgentArea } from "../vm/agent/vm-agent-area.js";
import { vmServerArea } from "../vm/manager/vm-server-area.js";
import { privilegedAgentArea } from "../privileged/privileged-agent-area.js";
import { hostKeysServerArea } from "../privileged/host-keys-server-area.js";
import { privilegedAuditServerArea } from "../privileged/privileged-audit-server-area.js";
import { deployServerArea } from "../deploy/server/deploy-server-area.js";

export const SERVER_AREAS: ServerArea[] = [tokenServerArea, vmServerArea, hostKeysServerArea, privilegedAuditServerArea, deployServerArea, jobServerArea];

export const AGENT_AREAS: AgentArea[] = [tokenAgentArea, vmAgentArea, privilegedAgentArea, jobAgentArea];
