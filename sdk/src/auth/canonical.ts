// Canonical (deterministic) protobuf encoding: the bytes that are signed and sent on the wire.
// Implements "Canonicalization happens once, in the SDK": fields ascending and implicit
// defaults omitted come from ts-proto's generated encode (fields are declared in ascending
// order; test/auth/proto-field-order.test.ts guards that); map entries are sorted here,
// because the generated encode writes a Map in insertion order.

function compareKeys(a: unknown, b: unknown): number {
  if (typeof a === "string" && typeof b === "string") {
    // Protobuf map keys sort by their encoded (UTF-8) bytes, not by UTF-16 code units.
    return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
  }
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "bigint" && typeof b === "bigint") return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}

function copy(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  // Bytes are leaves: encode copies them as they are.
  if (value instanceof Uint8Array) return value;
  if (value instanceof Map) {
    const entries = [...value.entries()].sort(([a], [b]) => compareKeys(a, b));
    return new Map(entries.map(([k, v]) => [k, copy(v)]));
  }
  if (Array.isArray(value)) return value.map(copy);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = copy(v);
  return out;
}

function containsMap(value: unknown): boolean {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return false;
  if (value instanceof Map) return true;
  if (Array.isArray(value)) return value.some(containsMap);
  for (const v of Object.values(value)) if (containsMap(v)) return true;
  return false;
}

/** Deep copy of a generated message with every Map rebuilt in sorted key order. */
export function canonicalize<T>(msg: T): T {
  return copy(msg) as T;
}

/**
 * What encode needs: `msg` itself when it holds no Map (already canonical for ts-proto's
 * encode, and the hot path then allocates nothing), else the canonicalized copy.
 */
export function canonicalForEncode<T>(msg: T): T {
  return containsMap(msg) ? (copy(msg) as T) : msg;
}

export interface MessageEncoder<T> {
  encode(message: T): { finish(): Uint8Array };
}

/** The canonical wire bytes of `msg`: what the SDK signs and sends. */
export function canonicalEncode<T>(codec: MessageEncoder<T>, msg: T): Uint8Array {
  return codec.encode(canonicalForEncode(msg)).finish();
}
