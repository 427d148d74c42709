// Test support for the secure-jobs area: a real dev server (startDevEnv) plus tenant users
// with their own keys, key holders on temp ledgers, and the example modules built from .wat.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService, PolicyEffect } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { KeyHolder } from "../../sdk/src/job/key-holder.js";
import { openSession, type JobSession } from "../../sdk/src/job/job-session.js";
import { startDevEnv, type DevEnv } from "../support/dev-env.js";

export interface JobUser {
  name: string;
  key: SigningKey;
  keyHolder: KeyHolder;
  ledgerPath: string;
  dek: Uint8Array;
  dekId: string;
  session(variant?: "sign" | "encrypt"): Promise<JobSession>;
}

export interface JobTestEnv {
  env: DevEnv;
  address: string;
  tmp: string;
  user(name: string): Promise<JobUser>;
  stop(): Promise<void>;
}

export async function startJobTestEnv(): Promise<JobTestEnv> {
  const env = await startDevEnv();
  const address = env.dev.server.address;
  const tmp = mkdtempSync(path.join(os.tmpdir(), "tp-job-client-"));
  const holders: KeyHolder[] = [];
  const sessions: JobSession[] = [];
  const auth = createClient(AuthServiceService, address, { key: env.admin });
  return {
    env,
    address,
    tmp,
    async user(name) {
      const key = generateSigningKey("Ed25519");
      await auth.createPrincipal({
        requestId: `p-${name}-${randomBytes(4).toString("hex")}`,
        name,
        kind: "user",
        roles: [],
        policy: { rules: [{ methods: ["/trustplane.job.v1.JobService/*", "/trustplane.job.v1.StorageService/*"], effect: PolicyEffect.POLICY_EFFECT_ALLOW }] },
      });
      await auth.addKey({ requestId: `k-${name}-${randomBytes(4).toString("hex")}`, principal: name, jwk: JSON.stringify(key.publicJwk) });
      const ledgerPath = path.join(tmp, `${name}.otk-ledger.jsonl`);
      // The CA key is pinned from the server process itself, never from a response.
      const keyHolder = await KeyHolder.open({ ledgerPath, caKeys: [env.dev.server.keys.ca.publicJwk] });
      holders.push(keyHolder);
      const dek = randomBytes(32);
      const dekId = `${name}-dek-1`;
      keyHolder.addDek(dekId, dek);
      return {
        name,
        key,
        keyHolder,
        ledgerPath,
        dek,
        dekId,
        async session(variant = "sign") {
          const s = await openSession(address, key, { keyHolder, variant });
          sessions.push(s);
          return s;
        },
      };
    },
    async stop() {
      for (const s of sessions) s.close();
      for (const h of holders) await h.close().catch(() => undefined);
      auth.close();
      await env.stop();
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** Every file below `dir` (for the "never on the service side" scans), optionally filtered. */
export function filesUnder(dir: string, filter: (file: string, size: number, mtimeMs: number) => boolean = () => true): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    const p = path.join(dir, n);
    let st;
    try {
      st = statSync(p);
    } catch {
      return [];
    }
    if (st.isDirectory()) return filesUnder(p, filter);
    return st.isFile() && filter(p, st.size, st.mtimeMs) ? [p] : [];
  });
}
