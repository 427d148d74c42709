// Generates test/vectors/signing.json: published vectors for Trustplane call signing (fixed
// keys as JWK, canonical request bytes, CallStatement, PAE, signatures, thumbprints, stream
// digests). Run: npx tsx test/vectors/generate.ts. Ed25519 and HS256 signatures are
// deterministic; ES256 ones are random per run, so they are verify-only vectors.
import { createECDH, createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { exportPrivateJwk, importSigningKey, type SigningKey } from "../../sdk/src/auth/signing-key.js";
import { canonicalEncode } from "../../sdk/src/auth/canonical.js";
import { signCall } from "../../sdk/src/auth/call-statement.js";
import { streamDigest } from "../../sdk/src/auth/stream-digest.js";
import { CALL_STATEMENT_TYPE, CERTIFICATE_TYPE, pae } from "../../sdk/src/auth/pae.js";
import * as authV1 from "../../sdk/src/gen/trustplane/auth/v1/service.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
const seed = (label: string) => createHash("sha256").update(`trustplane test vector ${label}`).digest();

export function fixedKeys(): Record<"ed25519" | "es256" | "hs256", SigningKey> {
  // RFC 8032 section 7.1, TEST 1.
  const edD = Buffer.from("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "hex");
  const edX = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex");
  const ecD = seed("p256 key");
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(ecD);
  const pub = ecdh.getPublicKey(); // 0x04 || x || y
  return {
    ed25519: importSigningKey({ kty: "OKP", crv: "Ed25519", d: b64u(edD), x: b64u(edX) }),
    es256: importSigningKey({ kty: "EC", crv: "P-256", d: b64u(ecD), x: b64u(pub.subarray(1, 33)), y: b64u(pub.subarray(33, 65)) }),
    hs256: importSigningKey({ kty: "oct", k: b64u(seed("hmac secret")) }),
  };
}

type CodecName = "EchoRequest" | "CreatePrincipalRequest" | "JoinHostRequest";

interface CallInput {
  name: string;
  method: string;
  requestType: CodecName;
  /** ts-proto toJSON form; map keys deliberately NOT sorted, canonical encoding sorts them. */
  requestJson: unknown;
  timestampMs: number;
  nonceHex: string;
  targetHost: string;
  /** For stream vectors: the later messages' hex (the first is the request). */
  streamTailHex?: string[];
}

const CALLS: CallInput[] = [
  {
    name: "echo",
    method: "/trustplane.auth.v1.AuthService/Echo",
    requestType: "EchoRequest",
    requestJson: { message: "hello, trustplane" },
    timestampMs: 1767225600000,
    nonceHex: "000102030405060708090a0b0c0d0e0f",
    targetHost: "",
  },
  {
    name: "create-principal-host-bound",
    method: "/trustplane.auth.v1.AuthService/CreatePrincipal",
    requestType: "CreatePrincipalRequest",
    requestJson: {
      requestId: "req-0001",
      name: "alice",
      roles: ["operator", "auditor"],
      policy: { rules: [{ methods: ["/trustplane.vm.v1.VmService/*"], effect: "POLICY_EFFECT_ALLOW" }] },
      kind: "user",
    },
    timestampMs: 1767225601234,
    nonceHex: "f0e1d2c3b4a5968778695a4b3c2d1e0f",
    targetHost: "host-eu-1",
  },
  {
    name: "join-host-map-stream",
    method: "/trustplane.auth.v1.AuthService/JoinHost",
    requestType: "JoinHostRequest",
    requestJson: { requestId: "join-1", hostId: "host-eu-1", labels: { zone: "eu-1", arch: "x86_64", "\u00e9t\u00e9": "1", Z: "upper" } },
    timestampMs: 1767225602000,
    nonceHex: "11111111222222223333333344444444",
    targetHost: "",
    streamTailHex: ["0a0474776f", ""],
  },
];

export function buildVectors(): unknown {
  const keys = fixedKeys();
  const calls = [];
  for (const c of CALLS) {
    const codec = authV1[c.requestType] as unknown as { fromJSON(o: unknown): unknown; encode(m: unknown): { finish(): Uint8Array } };
    const requestBytes = canonicalEncode(codec, codec.fromJSON(c.requestJson));
    const digest = c.streamTailHex ? streamDigest([requestBytes, ...c.streamTailHex.map((h) => Buffer.from(h, "hex"))]) : undefined;
    for (const [keyName, key] of Object.entries(keys)) {
      const signed = signCall({
        method: c.method,
        requestBytes,
        streamDigest: digest,
        key,
        targetHost: c.targetHost,
        nowMs: c.timestampMs,
        nonce: Buffer.from(c.nonceHex, "hex"),
      });
      calls.push({
        name: `${c.name}/${keyName}`,
        key: keyName,
        method: c.method,
        requestType: c.requestType,
        requestJson: c.requestJson,
        timestampMs: c.timestampMs,
        nonceHex: c.nonceHex,
        targetHost: c.targetHost,
        streamTailHex: c.streamTailHex,
        requestHex: hex(requestBytes),
        requestSha256Hex: hex(createHash("sha256").update(requestBytes).digest()),
        streamDigestHex: digest ? hex(digest) : "",
        statementHex: hex(signed.statement),
        paeHex: hex(pae(CALL_STATEMENT_TYPE, signed.statement)),
        signatureHex: hex(signed.signature),
        deterministic: key.algorithm !== "ES256",
      });
    }
  }
  return {
    description:
      "Trustplane call-signing vectors. sig = Sign(key, PAE(call-statement type, statement)); PAE = 'DSSEv1' SP LEN(type) SP type SP LEN(body) SP body. Ed25519 and HS256 signatures are deterministic; ES256 (IEEE P1363 r||s, SHA-256) vectors are verify-only. Regenerate with: npx tsx test/vectors/generate.ts",
    payloadTypes: { callStatement: CALL_STATEMENT_TYPE, certificate: CERTIFICATE_TYPE },
    keys: Object.fromEntries(
      Object.entries(keys).map(([name, k]) => [name, { algorithm: k.algorithm, privateJwk: exportPrivateJwk(k), publicJwk: k.publicJwk, keyId: k.keyId }]),
    ),
    thumbprints: [
      {
        name: "rfc7638-section-3.1",
        jwk: {
          kty: "RSA",
          n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
          e: "AQAB",
          alg: "RS256",
          kid: "2011-04-29",
        },
        thumbprint: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
      },
      ...Object.entries(keys).map(([name, k]) => ({ name, jwk: k.publicJwk, thumbprint: k.keyId })),
    ],
    streamDigests: [
      { messagesHex: [], digestHex: hex(streamDigest([])) },
      { messagesHex: ["6162", "63"], digestHex: hex(streamDigest([Buffer.from("ab"), Buffer.from("c")])) },
      { messagesHex: ["61", "6263"], digestHex: hex(streamDigest([Buffer.from("a"), Buffer.from("bc")])) },
    ],
    calls,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = fileURLToPath(new URL("./signing.json", import.meta.url));
  writeFileSync(out, `${JSON.stringify(buildVectors(), null, 2)}\n`);
  console.log(`wrote ${out}`);
}
