// `?` → `$n` rewriting for PostgreSQL: every placeholder outside literals, quoted identifiers,
// dollar quotes and comments is numbered in order; everything else is copied byte for byte.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toPostgresPlaceholders } from "../../server/src/runtime/storage/sql-db.js";

type Piece = { kind: "param" } | { kind: "text"; text: string };

// Text that contains none of the characters that open a quoted or commented region.
const plain = fc.stringMatching(/^[a-z0-9 ,=()*<>+._\n]{0,12}$/).map((t) => t.replace(/--|\/\*/g, " "));
const inner = fc.stringMatching(/^[a-z0-9 ?,$]{0,10}$/);
const piece: fc.Arbitrary<Piece> = fc.oneof(
  fc.constant<Piece>({ kind: "param" }),
  plain.map((text): Piece => ({ kind: "text", text: ` ${text} ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` '${t}' ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` 'it''s ${t}' ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` E'\\' ${t}' ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` "${t.replace(/\$/g, "")}" ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` -- ${t}\n` })),
  inner.map((t): Piece => ({ kind: "text", text: ` /* ${t} */ ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` $q$ ${t.replace(/\$/g, "")} $q$ ` })),
  inner.map((t): Piece => ({ kind: "text", text: ` $$ ${t.replace(/\$/g, "")} $$ ` })),
);

describe("toPostgresPlaceholders", () => {
  it("numbers exactly the placeholders outside quoted and commented text", () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }), (pieces) => {
        let n = 0;
        const input = pieces.map((p) => (p.kind === "param" ? "?" : p.text)).join("");
        const expected = pieces.map((p) => (p.kind === "param" ? `$${++n}` : p.text)).join("");
        expect(toPostgresPlaceholders(input)).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it("handles the common shapes", () => {
    expect(toPostgresPlaceholders("SELECT * FROM t WHERE a = ? AND b = '?' AND c = ?")).toBe("SELECT * FROM t WHERE a = $1 AND b = '?' AND c = $2");
    expect(toPostgresPlaceholders("SELECT pg_advisory_xact_lock(?::int, hashtext(current_schema()))")).toBe("SELECT pg_advisory_xact_lock($1::int, hashtext(current_schema()))");
    expect(toPostgresPlaceholders("SELECT 1 -- why?\nFROM t WHERE x = ?")).toBe("SELECT 1 -- why?\nFROM t WHERE x = $1");
    expect(toPostgresPlaceholders("SELECT $$a?b$$, ?")).toBe("SELECT $$a?b$$, $1");
    expect(toPostgresPlaceholders("SELECT col$1, ?")).toBe("SELECT col$1, $1");
  });
});
