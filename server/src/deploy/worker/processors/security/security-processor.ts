// Security sub-processor (seed 001): roles and security constraints from WEB-INF/web.xml,
// @DeclareRoles-style META-INF/roles.properties ("roles=a, b"), and trustplane-roles.json
// ({"roles":[{"name","description?"}]}) for non-Java apps. Nested archives are not consulted.
// It asks the resource provider for the roles stored for its AAC, so the deployment reports
// which roles this version drops (grants to a dropped role silently stop working).
import type { SubProcessor } from "../sub-processor.js";
import { childText, parseStrictXml, type XmlElement } from "./strict-xml.js";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";

export interface SecurityResult {
  roles: { name: string; description?: string; source: string }[];
  constraints: { name: string; urlPatterns: string[]; httpMethods: string[]; roles: string[] }[];
  /** Roles stored for this AAC by the current deployment that this archive no longer declares. */
  removedRoles: string[];
}

const ROLE_NAME = /^[A-Za-z0-9_.*-]{1,128}$/;

function role(name: string, source: string, description?: string) {
  if (!ROLE_NAME.test(name)) throw new TrustplaneError("INVALID_ARGUMENT", "DESCRIPTOR_INVALID", `${source}: role name ${JSON.stringify(name.slice(0, 40))} is not valid`, "archive");
  return description ? { name, description, source } : { name, source };
}

export const securityProcessor: SubProcessor = {
  id: "security",
  async run(files, ctx): Promise<SecurityResult> {
    const out: SecurityResult = { roles: [], constraints: [], removedRoles: [] };
    const web = files.get("WEB-INF/web.xml");
    if (web) {
      const root = parseStrictXml(web.toString("utf8"));
      for (const r of root.children.filter((c) => c.name === "security-role")) {
        const desc = childText(r, "description")[0];
        out.roles.push(role(childText(r, "role-name")[0] ?? "", "web.xml", desc));
      }
      for (const c of root.children.filter((c) => c.name === "security-constraint")) {
        const cols = c.children.filter((x) => x.name === "web-resource-collection");
        const auth: XmlElement | undefined = c.children.find((x) => x.name === "auth-constraint");
        out.constraints.push({
          name: cols.flatMap((w) => childText(w, "web-resource-name"))[0] ?? "",
          urlPatterns: cols.flatMap((w) => childText(w, "url-pattern")),
          httpMethods: cols.flatMap((w) => childText(w, "http-method")),
          roles: auth ? childText(auth, "role-name") : [],
        });
      }
    }
    const props = files.get("META-INF/roles.properties");
    if (props) {
      for (const line of props.toString("utf8").split(/\r?\n/)) {
        const m = /^\s*roles\s*[=:]\s*(.*)$/.exec(line);
        if (m) for (const n of m[1]!.split(",").map((s) => s.trim()).filter(Boolean)) out.roles.push(role(n, "roles.properties"));
      }
    }
    const json = files.get("trustplane-roles.json");
    if (json) {
      let doc: unknown;
      try { doc = JSON.parse(json.toString("utf8")); } catch { throw new TrustplaneError("INVALID_ARGUMENT", "DESCRIPTOR_INVALID", "trustplane-roles.json is not valid JSON", "archive"); }
      const roles = (doc as { roles?: unknown }).roles;
      if (!Array.isArray(roles)) throw new TrustplaneError("INVALID_ARGUMENT", "DESCRIPTOR_INVALID", "trustplane-roles.json needs a roles array", "archive");
      for (const r of roles as { name?: unknown; description?: unknown }[]) {
        out.roles.push(role(String(r?.name ?? ""), "trustplane-roles.json", typeof r?.description === "string" ? r.description.slice(0, 512) : undefined));
      }
    }
    // Without a provider (a pool used on its own) there is no baseline to compare with.
    const current = ((await ctx.resource("roles.current").catch(() => ({}))) ?? {}) as { roles?: { name?: unknown }[] };
    const declared = new Set(out.roles.map((r) => r.name));
    out.removedRoles = [...new Set((current.roles ?? []).map((r) => String(r?.name ?? "")))].filter((n) => n && !declared.has(n)).sort();
    return out;
  },
};
