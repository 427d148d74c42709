// A small strict XML reader for deployment descriptors (security sub-processor, seed 001):
// elements and text only; DOCTYPE, entity declarations and any entity other than the five
// predefined ones are rejected, so there is nothing to expand (no billion laughs, no XXE).
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";

export interface XmlElement {
  name: string;
  children: XmlElement[];
  text: string;
}

const PREDEFINED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function bad(msg: string): TrustplaneError {
  return new TrustplaneError("INVALID_ARGUMENT", "DESCRIPTOR_INVALID", `web.xml: ${msg}; use a plain descriptor without DTDs or entities`, "archive");
}

function unescape(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);|&/g, (m, ref: string | undefined) => {
    if (!ref) throw bad("bare '&'");
    if (ref.startsWith("#x")) return String.fromCodePoint(parseInt(ref.slice(2), 16));
    if (ref.startsWith("#")) return String.fromCodePoint(parseInt(ref.slice(1), 10));
    const v = PREDEFINED[ref];
    if (v === undefined) throw bad(`entity &${ref}; is not allowed`);
    return v;
  });
}

export function parseStrictXml(src: string, maxDepth = 64): XmlElement {
  if (/<!DOCTYPE|<!ENTITY/i.test(src)) throw bad("DOCTYPE and entity declarations are not allowed");
  const root: XmlElement = { name: "#document", children: [], text: "" };
  const stack: XmlElement[] = [root];
  const re = /<\?[\s\S]*?\?>|<!--[\s\S]*?-->|<!\[CDATA\[([\s\S]*?)\]\]>|<(\/?)([A-Za-z_][\w.:-]*)((?:\s+[\w.:-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(src))) {
    const top = stack[stack.length - 1]!;
    if (m[7]) throw bad(`malformed markup at offset ${m.index}`);
    if (m[1] !== undefined) top.text += m[1];
    else if (m[6] !== undefined) top.text += unescape(m[6]);
    else if (m[3]) {
      if (m[2] === "/") {
        if (top.name !== m[3] || stack.length === 1) throw bad(`unexpected </${m[3]}>`);
        stack.pop();
      } else {
        const el: XmlElement = { name: m[3].replace(/^.*:/, ""), children: [], text: "" };
        top.children.push(el);
        if (!m[5]) stack.push(el);
        if (stack.length > maxDepth) throw bad("nesting too deep");
      }
    }
  }
  if (stack.length !== 1) throw bad("unclosed element");
  if (root.children.length !== 1) throw bad("expected exactly one root element");
  return root.children[0]!;
}

export function childText(el: XmlElement, name: string): string[] {
  return el.children.filter((c) => c.name === name).map((c) => c.text.trim());
}
