// API conventions every area's proto must keep: each mutating RPC carries a request_id
// (directly, or in the header of its client stream) so it can be made idempotent.
import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve("proto");
const MUTATING = /^(Create|Update|Delete|Start|Stop|Terminate|Attach|Detach|Configure|Issue|Rotate|Revoke|Renew|Grant|Submit|Put|Apply|Undeploy|Register|Cancel|Set|Add|Deploy|Define)/;
/** Documented exceptions: their identity is the caller's signed statement, not a request id. */
const EXEMPT = new Set([
  "SubmitStream", // carries request_id in the oneof sibling; checked below via SubmitStreamRequest
]);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(path.join(dir, n)).isDirectory() ? files(path.join(dir, n)) : n.endsWith(".proto") ? [path.join(dir, n)] : []));
}

const texts = files(ROOT).map((f) => readFileSync(f, "utf8"));
const all = texts.join("\n");

function messageBody(name: string): string | undefined {
  const m = new RegExp(`\\bmessage ${name} \\{([\\s\\S]*?)\\n\\}`).exec(all);
  return m?.[1];
}

function hasRequestId(name: string, depth = 0): boolean {
  const body = messageBody(name);
  if (!body) return false;
  if (/\bstring request_id = \d+;/.test(body)) return true;
  if (depth > 1) return false;
  // Client streams: the header message of the oneof carries it.
  const nested = [...body.matchAll(/^\s+(\w+) header = \d+;/gm)].map((m) => m[1]!);
  return nested.some((n) => hasRequestId(n, depth + 1));
}

describe("proto conventions", () => {
  const rpcs = [...all.matchAll(/rpc (\w+)\((?:stream )?(\w+)\)/g)].map((m) => ({ rpc: m[1]!, request: m[2]! }));

  it("finds the APIs of every area", () => {
    for (const area of ["auth", "token", "vm", "privileged", "deploy", "job"]) expect(statSync(path.join(ROOT, "trustplane", area, "v1")).isDirectory()).toBe(true);
    expect(rpcs.length).toBeGreaterThan(50);
  });

  it("gives every mutating RPC a request_id", () => {
    const missing = rpcs.filter((r) => MUTATING.test(r.rpc) && !EXEMPT.has(r.rpc) && !hasRequestId(r.request)).map((r) => r.rpc);
    expect(missing).toEqual([]);
    expect(hasRequestId("SubmitStreamRequest")).toBe(true);
  });
});
