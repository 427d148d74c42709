// Loads the published signing vectors (test/vectors/signing.json) with their types, for the
// vector re-derivation test and the @noble/curves differential test.
import { readFileSync } from "node:fs";

export interface CallVector {
  name: string;
  key: string;
  method: string;
  requestType: "EchoRequest" | "CreatePrincipalRequest" | "JoinHostRequest";
  requestJson: unknown;
  timestampMs: number;
  nonceHex: string;
  targetHost: string;
  streamTailHex?: string[];
  requestHex: string;
  requestSha256Hex: string;
  streamDigestHex: string;
  statementHex: string;
  paeHex: string;
  signatureHex: string;
  deterministic: boolean;
}

export interface Vectors {
  keys: Record<string, { algorithm: string; privateJwk: Record<string, string>; publicJwk: Record<string, string>; keyId: string }>;
  thumbprints: { name: string; jwk: Record<string, string>; thumbprint: string }[];
  streamDigests: { messagesHex: string[]; digestHex: string }[];
  calls: CallVector[];
}

export const vectors: Vectors = JSON.parse(readFileSync(new URL("./signing.json", import.meta.url), "utf8"));
