// A small parser for the subset of proto3 this repository writes (messages, oneofs, maps,
// enums, services with streaming rpcs, options, leading doc comments), so the convention
// tests can check every .proto under proto/ without running protoc.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

export interface ProtoField {
  name: string;
  number: number;
  /** Type as written (scalar, message name, or `map<k, v>`). */
  type: string;
  repeated: boolean;
  map: boolean;
  /** Name of the enclosing oneof, if any. */
  oneof?: string;
  doc?: string;
}

export interface ProtoMessage {
  /** Package-qualified name, nested messages joined with dots. */
  fullName: string;
  /** Name as it is referenced inside its package (nested: "Outer.Inner"). */
  localName: string;
  file: string;
  /** Fields in declaration order, oneof members at their positions. */
  fields: ProtoField[];
  doc?: string;
}

export interface ProtoRpc {
  name: string;
  request: string;
  requestStream: boolean;
  response: string;
  responseStream: boolean;
  doc?: string;
}

export interface ProtoService {
  fullName: string;
  name: string;
  file: string;
  rpcs: ProtoRpc[];
  doc?: string;
}

export interface ProtoFile {
  file: string;
  pkg: string;
  imports: string[];
  /** Comment lines before `syntax`. */
  header: string[];
  messages: ProtoMessage[];
  services: ProtoService[];
}

interface Token {
  text: string;
  line: number;
  /** The contiguous comment block ending on the line just above this token. */
  doc?: string;
}

function tokenize(source: string): { tokens: Token[]; header: string[] } {
  const tokens: Token[] = [];
  const header: string[] = [];
  let block: { lines: string[]; lastLine: number } | undefined;
  let line = 1;
  let lastTokenLine = 0;
  let i = 0;
  const comment = (text: string, startLine: number, endLine: number) => {
    if (tokens.length === 0) header.push(text);
    // A comment on a line that already holds a token trails it; it documents nothing below.
    if (startLine === lastTokenLine) {
      block = undefined;
      return;
    }
    if (block && block.lastLine === startLine - 1) {
      block.lines.push(text);
      block.lastLine = endLine;
    } else block = { lines: [text], lastLine: endLine };
  };
  while (i < source.length) {
    const c = source[i]!;
    if (c === "\n") {
      line++;
      i++;
    } else if (/\s/.test(c)) i++;
    else if (source.startsWith("//", i)) {
      const end = source.indexOf("\n", i);
      const stop = end === -1 ? source.length : end;
      comment(source.slice(i + 2, stop).trim(), line, line);
      i = stop;
    } else if (source.startsWith("/*", i)) {
      const end = source.indexOf("*/", i + 2);
      if (end === -1) throw new Error(`unterminated block comment at line ${line}`);
      const text = source.slice(i + 2, end);
      const lines = text.split("\n").length - 1;
      comment(text.replace(/^\s*\*?/gm, "").trim(), line, line + lines);
      line += lines;
      i = end + 2;
    } else {
      let text: string;
      if (c === '"' || c === "'") {
        const m = new RegExp(`^${c}(?:[^${c}\\\\\\n]|\\\\.)*${c}`).exec(source.slice(i));
        if (!m) throw new Error(`unterminated string at line ${line}`);
        text = m[0];
      } else if (/[A-Za-z0-9_.+-]/.test(c)) text = /^[A-Za-z0-9_.+-]+/.exec(source.slice(i))![0];
      else text = c;
      const doc = block && block.lastLine === line - 1 ? block.lines.join("\n") : undefined;
      block = undefined;
      tokens.push({ text, line, doc });
      lastTokenLine = line;
      i += text.length;
    }
  }
  return { tokens, header };
}

/** Parses one .proto source; `file` only labels the results and errors. */
export function parseProto(source: string, file = "<source>"): ProtoFile {
  const { tokens, header } = tokenize(source);
  let pos = 0;
  const fail = (msg: string): never => {
    const t = tokens[Math.min(pos, tokens.length - 1)];
    throw new Error(`${file}:${t?.line ?? 0}: ${msg}`);
  };
  const peek = () => tokens[pos]?.text;
  const next = (): Token => tokens[pos++] ?? fail("unexpected end of file");
  const expect = (text: string) => {
    const t = next();
    if (t.text !== text) fail(`expected "${text}", found "${t.text}"`);
  };
  const skipStatement = () => {
    let depth = 0;
    for (;;) {
      const t = next().text;
      if (t === "{" || t === "[" || t === "(") depth++;
      else if (t === "}" || t === "]" || t === ")") depth--;
      else if (t === ";" && depth === 0) return;
    }
  };
  const skipBlock = () => {
    while (peek() !== "{") next();
    let depth = 0;
    do {
      const t = next().text;
      if (t === "{") depth++;
      else if (t === "}") depth--;
    } while (depth > 0);
  };
  const skipFieldOptions = () => {
    if (peek() === "[") {
      while (next().text !== "]");
    }
    expect(";");
  };

  const out: ProtoFile = { file, pkg: "", imports: [], header, messages: [], services: [] };
  const qualify = (name: string) => (out.pkg ? `${out.pkg}.${name}` : name);

  function parseField(fields: ProtoField[], oneof: string | undefined) {
    const first = next();
    if (first.text === "map") {
      expect("<");
      const key = next().text;
      expect(",");
      const value = next().text;
      expect(">");
      const name = next().text;
      expect("=");
      const number = Number(next().text);
      skipFieldOptions();
      fields.push({ name, number, type: `map<${key}, ${value}>`, repeated: false, map: true, oneof, doc: first.doc });
      return;
    }
    let repeated = false;
    let type = first.text;
    if (type === "repeated" || type === "optional") {
      repeated = type === "repeated";
      type = next().text;
    }
    const name = next().text;
    expect("=");
    const number = Number(next().text);
    if (!Number.isInteger(number)) fail(`field ${name} has no number`);
    skipFieldOptions();
    fields.push({ name, number, type, repeated, map: false, oneof, doc: first.doc });
  }

  function parseMessage(outer: string | undefined, doc: string | undefined) {
    const name = next().text;
    const localName = outer ? `${outer}.${name}` : name;
    const message: ProtoMessage = { fullName: qualify(localName), localName, file, fields: [], doc };
    out.messages.push(message);
    expect("{");
    for (;;) {
      const t = peek();
      if (t === "}") {
        next();
        return;
      } else if (t === ";") next();
      else if (t === "message") parseMessage(localName, next().doc);
      else if (t === "enum" || t === "extend") skipBlock();
      else if (t === "option" || t === "reserved" || t === "extensions") skipStatement();
      else if (t === "oneof") {
        next();
        const oneof = next().text;
        expect("{");
        while (peek() !== "}") {
          if (peek() === "option") skipStatement();
          else parseField(message.fields, oneof);
        }
        next();
      } else parseField(message.fields, undefined);
    }
  }

  function parseService(doc: string | undefined) {
    const name = next().text;
    const service: ProtoService = { fullName: qualify(name), name, file, rpcs: [], doc };
    out.services.push(service);
    expect("{");
    for (;;) {
      const t = peek();
      if (t === "}") {
        next();
        return;
      } else if (t === ";") next();
      else if (t === "option") skipStatement();
      else if (t === "rpc") {
        const rpcDoc = next().doc;
        const rpcName = next().text;
        expect("(");
        const requestStream = peek() === "stream" && tokens[pos + 1]?.text !== ")";
        if (requestStream) next();
        const request = next().text;
        expect(")");
        expect("returns");
        expect("(");
        const responseStream = peek() === "stream" && tokens[pos + 1]?.text !== ")";
        if (responseStream) next();
        const response = next().text;
        expect(")");
        if (peek() === "{") skipBlock();
        else expect(";");
        service.rpcs.push({ name: rpcName, request, requestStream, response, responseStream, doc: rpcDoc });
      } else fail(`unexpected "${t}" in service ${name}`);
    }
  }

  while (pos < tokens.length) {
    const t = next();
    if (t.text === "package") {
      out.pkg = next().text;
      expect(";");
    } else if (t.text === "import") {
      let spec = next().text;
      if (spec === "public" || spec === "weak") spec = next().text;
      out.imports.push(spec.slice(1, -1));
      expect(";");
    } else if (t.text === "syntax" || t.text === "edition" || t.text === "option") skipStatement();
    else if (t.text === "message") parseMessage(undefined, t.doc);
    else if (t.text === "service") parseService(t.doc);
    else if (t.text === "enum" || t.text === "extend") {
      pos--;
      skipBlock();
    } else if (t.text !== ";") fail(`unexpected "${t.text}" at top level`);
  }
  return out;
}

/** Every .proto under `root`, parsed, in a stable order. */
export function loadProtoTree(root: string): ProtoFile[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir)
      .sort()
      .flatMap((n) => {
        const full = path.join(dir, n);
        return statSync(full).isDirectory() ? walk(full) : n.endsWith(".proto") ? [full] : [];
      });
  return walk(root).map((f) => parseProto(readFileSync(f, "utf8"), path.relative(root, f)));
}

/** Resolves a type name as written in `pkg` (relative to it, or fully qualified). */
export function resolveMessage(all: Map<string, ProtoMessage>, pkg: string, name: string): ProtoMessage | undefined {
  if (name.startsWith(".")) return all.get(name.slice(1));
  const parts = pkg.split(".");
  for (let n = parts.length; n >= 0; n--) {
    const found = all.get([...parts.slice(0, n), name].filter(Boolean).join("."));
    if (found) return found;
  }
  return undefined;
}
