// CA certificates: a Certificate message signed by a CA key inside a SignedEnvelope.
// Implements "One signing primitive" (keys certified by the Trustplane CA) with SSH-style
// rules: validity window, key id binding, host glob, unknown critical options are fatal.
import { createHash } from "node:crypto";
import { randomBytes } from "node:crypto";
import { TrustplaneError } from "../errors.js";
import { Certificate, SignedEnvelope } from "../gen/trustplane/auth/v1/auth.js";
import { signEnvelope, verifyEnvelopeSync } from "./envelope.js";
import { CERTIFICATE_TYPE } from "./pae.js";
import type { SigningKey } from "./signing-key.js";
import { importVerificationKey, type VerificationKey } from "./verification-key.js";

export type { Certificate };

export type CertificateInput = Pick<Certificate, "principal" | "publicKeyJwk" | "notBeforeMs" | "notAfterMs"> &
  Partial<Pick<Certificate, "serial" | "operationClasses" | "hostPattern" | "options">>;

/** A certifiable key: asymmetric only (an HMAC secret inside a certificate would leak it). */
function certifiedKey(publicKeyJwk: string): VerificationKey {
  const key = importVerificationKey(publicKeyJwk);
  if (key.algorithm === "HS256") {
    throw new TrustplaneError("INVALID_ARGUMENT", "UNSUPPORTED_KEY", "HMAC keys cannot be certified: certify an Ed25519 or P-256 public key", "public_key_jwk");
  }
  return key;
}

export function issueCertificate(caKey: SigningKey, c: CertificateInput): SignedEnvelope {
  if (caKey.algorithm === "HS256") {
    throw new TrustplaneError("INVALID_ARGUMENT", "UNSUPPORTED_KEY", "a CA key must be asymmetric (Ed25519 or ES256)", "ca_key");
  }
  const key = certifiedKey(c.publicKeyJwk);
  if (!(c.notAfterMs > c.notBeforeMs)) {
    throw new TrustplaneError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "not_after_ms must be later than not_before_ms", "not_after_ms");
  }
  const cert: Certificate = {
    serial: c.serial ?? randomBytes(16).toString("hex"),
    principal: c.principal,
    publicKeyJwk: JSON.stringify(key.jwk),
    keyId: key.keyId,
    operationClasses: [...(c.operationClasses ?? [])],
    hostPattern: c.hostPattern ?? "",
    notBeforeMs: c.notBeforeMs,
    notAfterMs: c.notAfterMs,
    options: (c.options ?? []).map((o) => ({ ...o })),
    caKeyId: caKey.keyId,
  };
  return signEnvelope(CERTIFICATE_TYPE, Certificate.encode(cert).finish(), [caKey]);
}

export interface VerifyCertificateOptions {
  caKeys: VerificationKey[];
  nowMs: number;
  /** The key id the certificate must certify (the caller's signing key). */
  keyId?: string;
  /** This verifier's host id; checked against host_pattern when given. */
  hostId?: string;
  /** Option names this verifier understands; an unknown critical option rejects the certificate. */
  knownOptions?: Set<string>;
}

function invalid(message: string, reason = "CERTIFICATE_INVALID"): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", reason, message, "certificate");
}

/**
 * Certificates whose CA signature already verified, by SHA-256 of their bytes (bounded), with
 * the certified key once imported: both are pure functions of these bytes.
 */
const VERIFIED_CA_SIGNATURES = new Map<string, { payload: Uint8Array; keyId: string; key?: VerificationKey }>();

/** verifyCertificate, also giving the certified key (imported once per certificate, then cached). */
export function verifyCertificateWithKey(envelopeBytes: Uint8Array, opts: VerifyCertificateOptions): { certificate: Certificate; key: VerificationKey } {
  let env: SignedEnvelope;
  try {
    env = SignedEnvelope.decode(envelopeBytes);
  } catch {
    throw invalid("the certificate is not a SignedEnvelope");
  }
  const caById = new Map(opts.caKeys.map((k) => [k.keyId, k]));
  // The CA signature is a pure function of these bytes and the CA key: verify it once per
  // (bytes, CA key) and remember it. Validity, key id, options and host are checked every time.
  const cacheKey = createHash("sha256").update(envelopeBytes).digest("base64url");
  let verified = VERIFIED_CA_SIGNATURES.get(cacheKey);
  if (!verified || !caById.has(verified.keyId)) {
    try {
      verified = verifyEnvelopeSync(env, { expectedType: CERTIFICATE_TYPE, resolveKey: (id) => caById.get(id) });
    } catch (e) {
      const reason = e instanceof TrustplaneError ? e.reason : "SIGNATURE_INVALID";
      throw invalid(`the certificate is not validly signed by a trusted CA (${reason})`);
    }
    if (VERIFIED_CA_SIGNATURES.size >= 4096) VERIFIED_CA_SIGNATURES.delete(VERIFIED_CA_SIGNATURES.keys().next().value!);
    VERIFIED_CA_SIGNATURES.set(cacheKey, verified);
  }
  let cert: Certificate;
  try {
    cert = Certificate.decode(verified.payload);
  } catch {
    throw invalid("the certificate payload does not parse");
  }
  if (cert.caKeyId !== verified.keyId) throw invalid("the certificate names another CA key than the one that signed it");
  let key: VerificationKey;
  try {
    key = verified.key ?? certifiedKey(cert.publicKeyJwk);
  } catch {
    throw invalid("the certified public key is not a valid Ed25519 or P-256 JWK");
  }
  verified.key = key;
  if (key.keyId !== cert.keyId) throw invalid("the certificate's key id is not the thumbprint of its public key");
  if (opts.keyId !== undefined && opts.keyId !== cert.keyId) throw invalid(`the certificate is for key ${cert.keyId}, not ${opts.keyId}`);
  if (!(cert.notAfterMs > cert.notBeforeMs)) throw invalid("the certificate has an empty validity window");
  if (opts.nowMs < cert.notBeforeMs || opts.nowMs >= cert.notAfterMs) {
    throw invalid(
      `the certificate is valid from ${new Date(cert.notBeforeMs).toISOString()} to ${new Date(cert.notAfterMs).toISOString()}; ask the CA for a new one`,
      "CERTIFICATE_EXPIRED",
    );
  }
  for (const o of cert.options) {
    if (o.critical && !opts.knownOptions?.has(o.name)) {
      throw invalid(`the certificate has critical option ${JSON.stringify(o.name)} that this verifier does not understand`);
    }
  }
  if (opts.hostId && !hostPatternMatches(cert.hostPattern, opts.hostId)) {
    throw invalid(`the certificate is restricted to hosts ${JSON.stringify(cert.hostPattern)}, not ${JSON.stringify(opts.hostId)}`, "HOST_MISMATCH");
  }
  return { certificate: cert, key };
}

export function verifyCertificate(envelopeBytes: Uint8Array, opts: VerifyCertificateOptions): Certificate {
  return verifyCertificateWithKey(envelopeBytes, opts).certificate;
}

/**
 * Glob over host ids as the CA documents it (SSH's pattern rules): "*" matches any run of
 * characters (also none), "?" exactly one character; an empty pattern matches every host.
 */
export function hostPatternMatches(pattern: string, hostId: string): boolean {
  if (pattern === "") return true;
  // Iterative wildcard match with one backtrack point: linear in practice, no regex built from input.
  let p = 0;
  let h = 0;
  let star = -1;
  let resume = 0;
  while (h < hostId.length) {
    const c = pattern[p];
    if (c === "?" || (c !== undefined && c !== "*" && c === hostId[h])) {
      p++;
      h++;
    } else if (c === "*") {
      star = p++;
      resume = h;
    } else if (star >= 0) {
      p = star + 1;
      h = ++resume;
    } else {
      return false;
    }
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}
