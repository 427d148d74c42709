// The host's attestation of a job VM's ephemeral key (seed 003, "the DEK only the job VM ever
// sees"): the agent's job bridge signs a JobVmAttestation with the host key, carrying the
// host's CA certificate; the client's key holder checks it against CA keys it pinned itself
// (never ones from the same response) before sealing the DEK to that key.
import { verifyCertificate, type Certificate } from "../auth/certificate.js";
import { signEnvelope, verifyEnvelopeSync, type SignedEnvelope } from "../auth/envelope.js";
import type { SigningKey } from "../auth/signing-key.js";
import { importVerificationKey, type VerificationKey } from "../auth/verification-key.js";
import { TrustplaneError } from "../errors.js";
import { JobVmAttestation } from "../gen/trustplane/job/v1/job_vm.js";

export const JOB_VM_ATTESTATION_TYPE = "application/vnd.trustplane.job-vm-attestation+proto";
/** An attestation older than this is refused (a key request is answered within minutes). */
export const ATTESTATION_MAX_AGE_MS = 10 * 60_000;

export { JobVmAttestation };

/** Host side: sign the statement with the host key, attaching its CA certificate. */
export function attestJobVm(hostKey: SigningKey, hostCertificate: Uint8Array, statement: JobVmAttestation): SignedEnvelope {
  return signEnvelope(JOB_VM_ATTESTATION_TYPE, JobVmAttestation.encode(statement).finish(), [{ key: hostKey, certificate: hostCertificate }]);
}

function refused(detail: string, reason = "ATTESTATION_INVALID"): TrustplaneError {
  return new TrustplaneError("PERMISSION_DENIED", reason, `the job VM's key is not attested by its host: ${detail}`, "host_attestation");
}

/**
 * Client side: the certificate is checked against `caKeys` (host:<id>, restricted to that
 * host, in its validity window), then the signature by the certified key over the received
 * bytes, then the type, and only then the payload is parsed. Returns the statement and the
 * certificate; the caller compares the statement with the key request.
 */
export function verifyJobVmAttestation(env: SignedEnvelope | undefined, opts: { caKeys: VerificationKey[]; nowMs: number }): { statement: JobVmAttestation; certificate: Certificate } {
  if (!env || env.signatures.length !== 1) throw refused("the key request carries no host attestation (exactly one host signature)", "ATTESTATION_MISSING");
  const sig = env.signatures[0]!;
  if (sig.certificate.length === 0) throw refused("the host signature carries no CA certificate");
  let certificate: Certificate;
  try {
    certificate = verifyCertificate(sig.certificate, { caKeys: opts.caKeys, nowMs: opts.nowMs, keyId: sig.keyId });
  } catch (e) {
    throw refused(`its certificate is not from a pinned CA (${(e as TrustplaneError).reason ?? (e as Error).message})`);
  }
  if (!certificate.principal.startsWith("host:")) throw refused(`the certificate is for ${JSON.stringify(certificate.principal)}, not a host`);
  const hostKey = importVerificationKey(certificate.publicKeyJwk);
  let payload: Uint8Array;
  try {
    payload = verifyEnvelopeSync(env, { expectedType: JOB_VM_ATTESTATION_TYPE, resolveKey: (id) => (id === hostKey.keyId ? hostKey : undefined) }).payload;
  } catch (e) {
    throw refused(`the host signature does not verify (${(e as TrustplaneError).reason ?? (e as Error).message})`);
  }
  let statement: JobVmAttestation;
  try {
    statement = JobVmAttestation.decode(payload);
  } catch {
    throw refused("the attestation payload does not parse");
  }
  const hostId = certificate.principal.slice("host:".length);
  if (statement.hostId !== hostId || (certificate.hostPattern !== "" && certificate.hostPattern !== hostId)) {
    throw refused(`the statement names host ${JSON.stringify(statement.hostId)} but the certificate is for ${JSON.stringify(hostId)}`);
  }
  if (Math.abs(opts.nowMs - Number(statement.issuedAtMs)) > ATTESTATION_MAX_AGE_MS) throw refused("the attestation is too old (or from the future)");
  return { statement, certificate };
}
