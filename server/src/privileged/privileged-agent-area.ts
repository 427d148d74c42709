// The privileged-operations area on the agent: PrivilegedService over the executor, with the
// host's keys from join, the CA it trusts, a replay cache, the VM control plane and the
// agent's patchable runtime configuration. Outcomes are audited in the agent's log.
import path from "node:path";
import { PrivilegedServiceService, type SubmitRequest } from "../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { invalidArgument } from "../../../sdk/src/errors.js";
import type { SignedEnvelope } from "../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { MemoryNonceStore } from "../runtime/auth/memory-nonce-store.js";
import type { AgentArea } from "../processes/area.js";
import { controlPlaneFor } from "../vm/agent/vm-agent-area.js";
import { PrivilegedExecutor } from "./executor/privileged-executor.js";
import { createOperationRegistry } from "./operations/operation-registry.js";
import { RuntimeConfigStore } from "./operations/runtime-config-store.js";

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export const privilegedAgentArea: AgentArea = {
  name: "privileged",
  async start(ctx) {
    const config = new RuntimeConfigStore(path.join(ctx.stateDir, "runtime-config.json"), {
      log_level: {
        initial: ctx.config.logLevel,
        validate: (v) => (LOG_LEVELS.has(v) ? undefined : `must be one of ${[...LOG_LEVELS].join(", ")}`),
        apply: (v) => {
          ctx.logger.level = v;
        },
      },
      metadata_rate_limit_per_second: {
        initial: "50",
        validate: (v) => (/^\d{1,5}$/.test(v) && Number(v) >= 1 ? undefined : "must be a whole number from 1 to 99999"),
        apply: () => undefined,
      },
    });
    const executor = new PrivilegedExecutor({
      hostId: ctx.hostId,
      hostKey: ctx.signingKey,
      sealingPrivateKey: ctx.sealing.privateKey,
      caKeys: () => ctx.caKeys,
      nonces: new MemoryNonceStore(),
      operations: createOperationRegistry({ controlPlane: controlPlaneFor(ctx.hostId), config, principalOf: (req) => req.requestId }),
      audit: (e) => ctx.logger.info({ audit: "privileged", ...e }, `privileged ${e.operation}: ${e.outcome}`),
    });
    const envelopeOf = (req: SubmitRequest): SignedEnvelope => {
      if (req.envelope) return req.envelope;
      if (req.sealed) return executor.unsealRequest(req.sealed);
      throw invalidArgument("request", "give a signed envelope or a sealed request");
    };
    ctx.bind(PrivilegedServiceService, {
      async submit(req, callCtx) {
        return { result: await executor.execute(envelopeOf(req), callCtx.caller) };
      },
      async *submitStream(req, callCtx) {
        yield { result: await executor.execute(envelopeOf(req), callCtx.caller) };
      },
    });
  },
};
