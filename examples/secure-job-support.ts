// What the secure-job example flows share: the CA keys their key holders pin. A real client
// pins them out of band; a demo's scratch client directory pins them on first use from the dev
// server (trust on first use), so the attestation check is the real one.
import path from "node:path";
import { createClient } from "../sdk/src/client/create-client.js";
import { AuthServiceService } from "../sdk/src/gen/trustplane/auth/v1/service.js";
import { pinnedCaKeys } from "../sdk/src/job/pinned-ca-keys.js";
import type { TourContext } from "./tour-context.js";

/** Pinned in `<clientDir>/ca.json`; fetched from the dev server only when not pinned yet. */
export async function demoCaKeys(ctx: TourContext, clientDir: string): Promise<string[]> {
  return pinnedCaKeys(path.join(clientDir, "ca.json"), async () => {
    const auth = createClient(AuthServiceService, ctx.server, { key: ctx.admin });
    try {
      return (await auth.getCaKeys({})).caJwks;
    } finally {
      auth.close();
    }
  });
}
