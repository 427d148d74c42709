// Documentation sub-processor (seed 001): README* and docs/*.md of the top-level archive,
// each reduced to a title and a table of contents (ATX and setext headings).
import type { SubProcessor } from "../sub-processor.js";

export interface DocEntry { path: string; title: string; toc: { level: number; text: string }[] }

export function headings(md: string): { level: number; text: string }[] {
  const out: { level: number; text: string }[] = [];
  const lines = md.split(/\r?\n/);
  let fence = false;
  lines.forEach((line, i) => {
    if (/^(```|~~~)/.test(line)) fence = !fence;
    if (fence) return;
    const atx = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (atx) return void out.push({ level: atx[1]!.length, text: atx[2]!.slice(0, 200) });
    const next = lines[i + 1] ?? "";
    if (line.trim() && /^=+\s*$/.test(next)) out.push({ level: 1, text: line.trim().slice(0, 200) });
    else if (line.trim() && /^-+\s*$/.test(next)) out.push({ level: 2, text: line.trim().slice(0, 200) });
  });
  return out.slice(0, 500);
}

export const documentationProcessor: SubProcessor = {
  id: "documentation",
  run(files): { docs: DocEntry[] } {
    const docs: DocEntry[] = [];
    for (const [path, data] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
      if (path.includes("!/")) continue;
      if (!/^README[^/]*$/i.test(path) && !/^docs\/[^!]*\.md$/i.test(path)) continue;
      const toc = headings(data.toString("utf8"));
      docs.push({ path, title: toc[0]?.text ?? path, toc });
    }
    return { docs };
  },
};
