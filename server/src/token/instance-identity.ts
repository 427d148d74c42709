// How a VM is named to its guest and in identity tokens (GCE-style instance facts), shared by
// the agent's metadata endpoint and the authority's format=full identity tokens so both
// always tell the guest the same project number and zone for the same VM (seed 000).
import { createHash } from "node:crypto";

/** The one zone of a Trustplane host today; served as projects/NUM/zones/ZONE like GCE. */
export const INSTANCE_ZONE = "local-a";

/** GCE project numbers are decimal; derive a stable one from the project id. */
export function numericProjectId(projectId: string): string {
  return BigInt("0x" + createHash("sha256").update(projectId).digest("hex").slice(0, 12)).toString();
}
