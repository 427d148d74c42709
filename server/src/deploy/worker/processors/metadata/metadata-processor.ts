// Metadata sub-processor (seed 001): MANIFEST.MF (OSGi headers), package.json (fields only;
// scripts are reported by name and never run) and META-INF/maven/**/pom.properties, for the
// archive and the archives nested in it.
import type { SubProcessor } from "../sub-processor.js";
import { parseManifest, splitPackages } from "./manifest.js";

function props(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([^#!=:\s][^=:]*?)\s*[=:]\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.slice(0, 256);
  }
  return out;
}

export const metadataProcessor: SubProcessor = {
  id: "metadata",
  run(files) {
    const manifests: Record<string, unknown>[] = [];
    const poms: Record<string, string>[] = [];
    let pkg: Record<string, unknown> | undefined;
    for (const [path, data] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
      if (/(^|!\/)META-INF\/MANIFEST\.MF$/.test(path)) {
        const m = parseManifest(data.toString("utf8"));
        manifests.push({
          path,
          manifestVersion: m.get("Manifest-Version"),
          bundleSymbolicName: m.get("Bundle-SymbolicName"),
          bundleVersion: m.get("Bundle-Version"),
          importPackage: m.has("Import-Package") ? splitPackages(m.get("Import-Package")!) : [],
        });
      } else if (/(^|!\/)META-INF\/maven\/.+\/pom\.properties$/.test(path)) {
        poms.push({ path, ...props(data.toString("utf8")) });
      } else if (path === "package.json") {
        const j = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
        const str = (k: string) => (typeof j[k] === "string" ? (j[k] as string).slice(0, 256) : undefined);
        pkg = {
          name: str("name"), version: str("version"), description: str("description"), main: str("main"), license: str("license"),
          dependencies: Object.keys((j.dependencies as object) ?? {}),
          scriptNames: Object.keys((j.scripts as object) ?? {}),
        };
      }
    }
    return { manifests, pomProperties: poms, packageJson: pkg ?? null };
  },
};
