// Canonical encoding: map entries sorted by key regardless of insertion order (strings by
// UTF-8 bytes), deterministic across runs, and stable under decode/re-encode.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalEncode, canonicalize } from "../../sdk/src/auth/canonical.js";
import { JoinHostRequest, JoinHostResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";

const labelsArb = fc.uniqueArray(fc.tuple(fc.string({ unit: "binary", maxLength: 6 }), fc.string({ maxLength: 6 })), {
  selector: ([k]) => k,
  maxLength: 12,
});

function shuffled<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe("canonicalEncode", () => {
  it("is independent of map insertion order (property)", () => {
    fc.assert(
      fc.property(labelsArb, fc.integer(), fc.string(), (entries, seed, hostId) => {
        const a = JoinHostRequest.fromPartial({ hostId, labels: new Map(entries) });
        const b = JoinHostRequest.fromPartial({ hostId, labels: new Map(shuffled(entries, seed)) });
        expect(Buffer.from(canonicalEncode(JoinHostRequest, a)).equals(canonicalEncode(JoinHostRequest, b))).toBe(true);
        // Nested maps inside nested messages too.
        const ra = JoinHostResponse.fromPartial({ host: { hostId, labels: new Map(entries) }, caJwks: ["x"] });
        const rb = JoinHostResponse.fromPartial({ host: { hostId, labels: new Map(shuffled(entries, seed + 1)) }, caJwks: ["x"] });
        expect(Buffer.from(canonicalEncode(JoinHostResponse, ra)).equals(canonicalEncode(JoinHostResponse, rb))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("decode(encode(x)) re-encodes to identical bytes (property)", () => {
    fc.assert(
      fc.property(labelsArb, fc.string(), fc.string(), (entries, hostId, token) => {
        const bytes = canonicalEncode(JoinHostRequest, JoinHostRequest.fromPartial({ hostId, joinToken: token, labels: new Map(entries) }));
        const again = canonicalEncode(JoinHostRequest, JoinHostRequest.decode(bytes));
        expect(Buffer.from(again).equals(bytes)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("sorts string keys by UTF-8 bytes, not UTF-16 code units", () => {
    // U+FFFF is EF BF BF in UTF-8 and sorts before U+10000 (F0 90 80 80); UTF-16 says the opposite.
    const m = canonicalize({ labels: new Map([["\u{10000}", "b"], ["\uFFFF", "a"], ["B", "x"], ["a", "y"]]) });
    expect([...m.labels.keys()]).toEqual(["B", "a", "\uFFFF", "\u{10000}"]);
    const n = canonicalize({ byId: new Map([[10, "x"], [-1, "y"], [2, "z"]]) });
    expect([...n.byId.keys()]).toEqual([-1, 2, 10]);
  });

  it("does not mutate the input and omits implicit defaults", () => {
    const msg = JoinHostRequest.fromPartial({ labels: new Map([["z", "1"], ["a", "2"]]) });
    canonicalEncode(JoinHostRequest, msg);
    expect([...msg.labels.keys()]).toEqual(["z", "a"]);
    expect(canonicalEncode(JoinHostRequest, JoinHostRequest.fromPartial({})).length).toBe(0);
  });
});
