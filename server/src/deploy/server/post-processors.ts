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

/**
 * Each worker output is `{ processorId, account, application, component, result }`: the
 * processor and AAC it claims must be the ones the server asked about, or it is refused.
 */
export function postProcess(outputs: ProcessorOutput[], aac: { account: string; application: string; component: string }): ProcessedContent {
  const out: ProcessedContent = { roles: [], constraints: [], docs: [], metadata: new Map() };
  const seen = new Set<string>();
  let removedRoles: string | undefined;
  for (const o of outputs) {
    if (!KNOWN.has(o.processorId)) throw new PostProcessingError("UNKNOWN_PROCESSOR", `unknown processor ${JSON.stringify(o.processorId)}`);
    if (seen.has(o.processorId)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `processor ${o.processorId} reported twice`);
    seen.add(o.processorId);
    const wrapper = obj(o.json, o.processorId);
    if (wrapper.processorId !== o.processorId) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `output for ${o.processorId} claims to come from ${String(wrapper.processorId)}`);
    if (wrapper.account !== aac.account || wrapper.application !== aac.application || wrapper.component !== aac.component) {
      throw new PostProcessingError("AAC_MISMATCH", `the ${o.processorId} output is for ${String(wrapper.account)}/${String(wrapper.application)}/${String(wrapper.component)}, not this deployment's AAC`);
    }
    const j = obj(wrapper.result, `${o.processorId}.result`);
    if (o.processorId === "security") {
      // One role may be declared by several descriptors (web.xml and @DeclareRoles): one
      // record per name, keeping the first description any of them gave.
      const roles = new Map<string, SecurityRole>();
      arr(j.roles ?? [], "security.roles", LIMITS.roles).forEach((r, i) => {
        const ro = obj(r, `security.roles[${i}]`);
        const role = { name: str(ro.name, `security.roles[${i}].name`, 256), description: str(ro.description ?? "", `security.roles[${i}].description`) };
        const had = roles.get(role.name);
        if (!had || (!had.description && role.description)) roles.set(role.name, role);
      });
      out.roles = [...roles.values()];
      out.constraints = arr(j.constraints ?? [], "security.constraints", LIMITS.constraints).map((c, i) => {
        const co = obj(c, `security.constraints[${i}]`);
        const list = (v: unknown, w: string) => arr(v ?? [], w, 100).map((x, k) => str(x, `${w}[${k}]`, 512));
        return { name: str(co.name ?? "", `security.constraints[${i}].name`, 256), urlPatterns: list(co.urlPatterns, "urlPatterns"), httpMethods: list(co.httpMethods, "httpMethods"), roles: list(co.roles, "roles") };
      });
      const declared = new Set(out.roles.map((r) => r.name));
      const removed = arr(j.removedRoles ?? [], "security.removedRoles", LIMITS.roles).map((r, i) => str(r, `security.removedRoles[${i}]`, 256));
      if (removed.length) removedRoles = removed.join(",").slice(0, LIMITS.text);
      for (const c of out.constraints) for (const r of c.roles) if (r !== "*" && !declared.has(r)) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `constraint ${c.name} uses undeclared role ${r}`);
    } else if (o.processorId === "documentation") {
      // Worker shape: { docs: [{ path, title, toc: [{ level, text }] }] }.
      out.docs = arr(j.docs ?? [], "documentation.docs", LIMITS.docs).map((d, i) => {
        const dd = obj(d, `documentation.docs[${i}]`);
        return {
          file: str(dd.path, `docs[${i}].path`, 512),
          title: str(dd.title ?? "", `docs[${i}].title`, 512),
          headings: arr(dd.toc ?? [], `docs[${i}].toc`, LIMITS.headings).map((h, k) => {
            const hh = obj(h, `docs[${i}].toc[${k}]`);
            const level = Number(hh.level);
            if (!Number.isInteger(level) || level < 1 || level > 6) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `docs[${i}].toc[${k}].level must be 1..6`);
            return { level, text: str(hh.text, `docs[${i}].toc[${k}].text`, 512) };
          }),
        };
      });
    } else {
      // Worker shape: { manifests: [...], pomProperties: [...], packageJson: {...} | null },
      // flattened into the metadata map under stable keys.
      const put = (k: string, v: unknown) => {
        if (v === undefined || v === null) return;
        const text = Array.isArray(v) ? v.map((x, i) => str(x, `${k}[${i}]`, 512)).join(",") : str(v, k);
        if (out.metadata.size >= LIMITS.metadata) throw new PostProcessingError("WORKER_OUTPUT_INVALID", `metadata has more than ${LIMITS.metadata} keys`);
        out.metadata.set(k, text.slice(0, LIMITS.text));
      };
      const manifests = arr(j.manifests ?? [], "metadata.manifests", 100).map((m, i) => obj(m, `manifests[${i}]`));
      const top = manifests.find((m) => m.path === "META-INF/MANIFEST.MF") ?? manifests[0];
      if (top) {
        put("Manifest-Version", top.manifestVersion);
        put("Bundle-SymbolicName", top.bundleSymbolicName);
        put("Bundle-Version", top.bundleVersion);
        put("Import-Package", top.importPackage);
      }
      arr(j.pomProperties ?? [], "metadata.pomProperties", 100).forEach((p, i) => {
        const pp = obj(p, `pomProperties[${i}]`);
        for (const k of ["groupId", "artifactId", "version"]) put(`maven.${str(pp.artifactId ?? `#${i}`, "artifactId", 256)}.${k}`, pp[k]);
      });
      if (j.packageJson) {
        const pj = obj(j.packageJson, "metadata.packageJson");
        for (const k of ["name", "version", "description", "main", "license"]) put(`package.${k}`, pj[k]);
        put("package.dependencies", pj.dependencies);
        // Script names are recorded; the scripts themselves were never run.
        put("package.scripts", pj.scriptNames);
      }
    }
  }
  if (removedRoles) out.metadata.set("security.removed-roles", removedRoles);
  return out;
}
