// Post-processors on the trusted side (seed 001): they read what a worker produced, through
// the identifiers it returned, and validate it before anything is stored: a known processor
// id, the expected schema, bounded sizes and no foreign AAC. What fails is treated as the
// worker lying, and the deployment is rejected as malicious.
import type { DocEntry, SecurityConstraint, SecurityRole } from "../../../../sdk/src/gen/trustplane/deploy/v1/deploy.js";
import type { ProcessorOutput } from "./archive-validator.js";

export interface ProcessedContent {
  roles: SecurityRole[];
  constraints: SecurityConstraint[];
  docs: DocEntry[];
  metadata: Map<string, string>;
}

export class PostProcessingError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

const KNOWN = new Set(["security", "documentation", "metadata"]);
const LIMITS = { roles: 1000, constraints: 1000, docs: 500, headings: 500, metadata: 500, text: 4096 };

function str(v: unknown, what: string, max = LIMITS.text): string {
  if (typeof v !== "string") throw new PostProcessingError("WORKER_OUTPUT_INVALID", `${what} must be a string`);
  if (v.length > max) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `${what} is longer than ${max} characters`);
  return v;
}

function arr(v: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `${what} must be an array`);
  if (v.length > max) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `${what} has more than ${max} entries`);
  return v;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `${what} must be an object`);
  return v as Record<string, unknown>;
}

export function postProcess(outputs: ProcessorOutput[]): ProcessedContent {
  const out: ProcessedContent = { roles: [], constraints: [], docs: [], metadata: new Map() };
  const seen = new Set<string>();
  for (const o of outputs) {
    if (!KNOWN.has(o.processorId)) throw new PostProcessingError("UNKNOWN_PROCESSOR", `unknown processor ${JSON.stringify(o.processorId)}`);
    if (seen.has(o.processorId)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `processor ${o.processorId} reported twice`);
    seen.add(o.processorId);
    const j = obj(o.json, o.processorId);
    if (o.processorId === "security") {
      out.roles = arr(j.roles ?? [], "security.roles", LIMITS.roles).map((r, i) => {
        const ro = obj(r, `security.roles[${i}]`);
        return { name: str(ro.name, `security.roles[${i}].name`, 256), description: str(ro.description ?? "", `security.roles[${i}].description`) };
      });
      out.constraints = arr(j.constraints ?? [], "security.constraints", LIMITS.constraints).map((c, i) => {
        const co = obj(c, `security.constraints[${i}]`);
        const list = (v: unknown, w: string) => arr(v ?? [], w, 100).map((x, k) => str(x, `${w}[${k}]`, 512));
        return { name: str(co.name ?? "", `security.constraints[${i}].name`, 256), urlPatterns: list(co.urlPatterns, "urlPatterns"), httpMethods: list(co.httpMethods, "httpMethods"), roles: list(co.roles, "roles") };
      });
      const declared = new Set(out.roles.map((r) => r.name));
      for (const c of out.constraints) for (const r of c.roles) if (r !== "*" && !declared.has(r)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `constraint ${c.name} uses undeclared role ${r}`);
    } else if (o.processorId === "documentation") {
      out.docs = arr(j.docs ?? [], "documentation.docs", LIMITS.docs).map((d, i) => {
        const dd = obj(d, `documentation.docs[${i}]`);
        return {
          file: str(dd.file, `docs[${i}].file`, 512),
          title: str(dd.title ?? "", `docs[${i}].title`, 512),
          headings: arr(dd.headings ?? [], `docs[${i}].headings`, LIMITS.headings).map((h, k) => {
            const hh = obj(h, `docs[${i}].headings[${k}]`);
            const level = Number(hh.level);
            if (!Number.isInteger(level) || level < 1 || level > 6) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `docs[${i}].headings[${k}].level must be 1..6`);
            return { level, text: str(hh.text, `docs[${i}].headings[${k}].text`, 512) };
          }),
        };
      });
    } else {
      const m = obj(j.metadata ?? {}, "metadata.metadata");
      const entries = Object.entries(m);
      if (entries.length > LIMITS.metadata) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `metadata has more than ${LIMITS.metadata} keys`);
      for (const [k, v] of entries.sort(([a], [b]) => (a < b ? -1 : 1))) out.metadata.set(str(k, "metadata key", 256), str(v, `metadata.${k}`));
    }
  }
  return out;
}
