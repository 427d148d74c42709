// Who may touch a tenant's hosted objects (seed 003, "tenant-scoped"): the principal whose
// name is the tenant, or a principal holding the role `tenant:<name>`. Admin is not enough:
// client-encrypted data is the tenant's, and jobs must not read outside their own data.
import { TrustplaneError } from "../../../sdk/src/errors.js";
import type { Caller } from "../runtime/auth/caller.js";

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._\/-]{0,254}$/;

export function checkTenantAccess(caller: Pick<Caller, "principal" | "roles">, tenant: string): void {
  if (tenant === "") throw new TrustplaneError("INVALID_ARGUMENT", "TENANT_REQUIRED", "tenant: name the tenant that owns the object (usually your principal name)", "tenant");
  if (tenant === caller.principal || caller.roles.includes(`tenant:${tenant}`)) return;
  throw new TrustplaneError(
    "PERMISSION_DENIED",
    "TENANT_FORBIDDEN",
    `principal ${JSON.stringify(caller.principal)} may not access tenant ${JSON.stringify(tenant)}; use your own tenant or get the role tenant:${tenant}`,
    "tenant",
  );
}

export function checkObjectName(name: string): void {
  if (!NAME_RE.test(name) || name.includes("..")) {
    throw new TrustplaneError("INVALID_ARGUMENT", "OBJECT_NAME_INVALID", "name: 1..255 characters of letters, digits, . _ / -, not starting with a separator and without '..'", "name");
  }
}
