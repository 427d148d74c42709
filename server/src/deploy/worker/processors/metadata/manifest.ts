// MANIFEST.MF reader for the metadata sub-processor (seed 001): 72-byte lines continued by a
// leading space, main section only; OSGi Import-Package split on commas outside quotes.
export function parseManifest(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "") { if (out.size) break; continue; } // end of main section
    if (line.startsWith(" ") && last) { out.set(last, out.get(last)! + line.slice(1)); continue; }
    const i = line.indexOf(": ");
    if (i <= 0) continue;
    last = line.slice(0, i);
    out.set(last, line.slice(i + 2));
  }
  return out;
}

export function splitPackages(header: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (const ch of header) {
    if (ch === '"') quoted = !quoted;
    if (ch === "," && !quoted) { out.push(cur.trim()); cur = ""; } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}
