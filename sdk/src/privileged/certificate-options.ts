// Per-key restrictions of a privileged operator certificate (seed 002), as SSH certificates
// have force-command and source-address: critical options the agent understands and enforces
// on top of the operation classes. Any other critical option stays fatal (verifyCertificate).
import { TrustplaneError } from "../errors.js";
import type { Certificate } from "../gen/trustplane/auth/v1/auth.js";
import { OPERATION_CLASSES, OPERATION_NAMES, type OperationName } from "./operations.js";

/** "start_guest,stop_guest": only these operations, even where the classes allow more. */
export const OPERATIONS_OPTION = "operations";
/** "1048576": the most guest memory (bytes) one read or dump may return. */
export const MAX_MEMORY_READ_OPTION = "max_memory_read";

/** The critical options privileged verifiers understand (pass as knownOptions). */
export const PRIVILEGED_CERTIFICATE_OPTIONS: ReadonlySet<string> = new Set([OPERATIONS_OPTION, MAX_MEMORY_READ_OPTION]);

export interface CertificateRestrictions {
  /** Allowed operation names; undefined means whatever the classes allow. */
  operations?: ReadonlySet<OperationName>;
  /** Largest memory read or dump in bytes; undefined means no per-key limit. */
  maxMemoryRead?: number;
}

function invalid(message: string): TrustplaneError {
  return new TrustplaneError("UNAUTHENTICATED", "CERTIFICATE_INVALID", message, "certificate");
}

/**
 * Reads the privileged options of a verified certificate. A known option with a value that does
 * not parse, or given twice, makes the certificate invalid (never "no restriction").
 */
export function certificateRestrictions(cert: Pick<Certificate, "options" | "operationClasses">): CertificateRestrictions {
  const out: { operations?: Set<OperationName>; maxMemoryRead?: number } = {};
  const seen = new Set<string>();
  for (const o of cert.options) {
    if (!PRIVILEGED_CERTIFICATE_OPTIONS.has(o.name)) continue;
    if (seen.has(o.name)) throw invalid(`the certificate gives option ${o.name} twice`);
    seen.add(o.name);
    if (o.name === OPERATIONS_OPTION) {
      const names = o.value.split(",").map((s) => s.trim());
      const unknown = names.filter((n) => !OPERATION_NAMES.includes(n as OperationName));
      if (names.length === 0 || unknown.length) throw invalid(`option operations names unknown operations ${JSON.stringify(unknown)}; use ${OPERATION_NAMES.join(", ")}`);
      const outside = names.filter((n) => !cert.operationClasses.includes(OPERATION_CLASSES[n as OperationName]));
      if (outside.length) throw invalid(`option operations lists ${outside.join(", ")} outside the certificate's classes (${cert.operationClasses.join(", ")})`);
      out.operations = new Set(names as OperationName[]);
    } else {
      if (!/^[1-9][0-9]{0,15}$/.test(o.value)) throw invalid(`option max_memory_read must be a positive whole number of bytes, not ${JSON.stringify(o.value)}`);
      out.maxMemoryRead = Number(o.value);
    }
  }
  return out;
}
