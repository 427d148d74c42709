// Guards the canonical-encoding guarantee "fields ascending": ts-proto's encode writes fields
// in declaration order, so every message in every .proto under proto/ must declare its
// field numbers in ascending order (oneof members included, at their positions).
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const PROTO_ROOT = path.resolve(import.meta.dirname, "../../proto");

function protoFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? protoFiles(full) : name.endsWith(".proto") ? [full] : [];
  });
}

/** message full name -> field numbers in declaration order. */
export function declaredFieldNumbers(source: string): Map<string, number[]> {
  const text = source.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ").replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const tokens = text.match(/[{};]|[^\s{};]+(?:\s+[^\s{};]+)*/g) ?? [];
  const result = new Map<string, number[]>();
  const stack: { kind: string; name: string; fields?: number[] }[] = [];
  const currentMessage = () => [...stack].reverse().find((b) => b.kind === "message");
  for (const raw of tokens) {
    const tok = raw.trim();
    if (tok === "{" || tok === ";") continue;
    if (tok === "}") {
      stack.pop();
      continue;
    }
    const block = /^(message|enum|oneof|service|extend|rpc)\s+(\S+)/.exec(tok);
    // Block headers are followed by "{"; rpc lines end with "{}" or ";".
    if (block && block[1] !== "rpc") {
      const fields = block[1] === "message" ? [] : undefined;
      const name = [...stack.filter((b) => b.kind === "message").map((b) => b.name), block[2]!].join(".");
      stack.push({ kind: block[1]!, name, fields });
      if (fields) result.set(name, fields);
      continue;
    }
    if (/^(rpc|option|reserved|syntax|package|import|extensions)\b/.test(tok)) {
      if (tok.startsWith("rpc") && /\)\s*$/.test(tok)) stack.push({ kind: "rpc", name: tok });
      continue;
    }
    const top = stack.at(-1);
    if (!top || (top.kind !== "message" && top.kind !== "oneof")) continue;
    const field = /=\s*(\d+)\s*(\[.*\])?$/.exec(tok);
    if (field) currentMessage()!.fields!.push(Number(field[1]));
  }
  return result;
}

describe("proto field order", () => {
  it("parses the parser's own fixture", () => {
    const got = declaredFieldNumbers(`
      message A { string x = 1; // c = 9;
        oneof o { int32 y = 2; string z = 3; }
        message B { map<string, string> m = 1; repeated int64 n = 2 [packed = true]; }
        reserved 4; bytes w = 5; }
      enum E { E_UNSPECIFIED = 0; E_X = 7; }
      service S { rpc M(A) returns (A); rpc N(A) returns (A) { option idempotency_level = NO_SIDE_EFFECTS; } }`);
    expect(Object.fromEntries(got)).toEqual({ A: [1, 2, 3, 5], "A.B": [1, 2] });
  });

  const files = protoFiles(PROTO_ROOT);
  it("finds the protos, including CallStatement's fields 1..6", () => {
    const auth = files.find((f) => f.endsWith(path.join("auth", "v1", "auth.proto")))!;
    expect(declaredFieldNumbers(readFileSync(auth, "utf8")).get("CallStatement")).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it.each(files.map((f) => [path.relative(PROTO_ROOT, f), f]))("%s declares fields in ascending order", (_rel, file) => {
    for (const [message, numbers] of declaredFieldNumbers(readFileSync(file, "utf8"))) {
      const sorted = [...numbers].sort((a, b) => a - b);
      expect(numbers, `${message} in ${_rel}`).toEqual(sorted);
      expect(new Set(numbers).size, `${message} in ${_rel} repeats a field number`).toBe(numbers.length);
    }
  });
});
