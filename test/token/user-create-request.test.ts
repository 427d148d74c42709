// The authority's check of the user's signed VM create request, in isolation: only a
// registered, unrevoked user key vouches (not a host's, not the server's own), the payload
// type is pinned, the request must name the account and scopes, the ACL decides, replays fail.
import { describe, expect, it } from "vitest";
import { generateSigningKey, signEnvelope, type SigningKey } from "../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { signVmCreateRequest } from "../../sdk/src/token/index.js";
import type { KeyRecord } from "../../server/src/runtime/storage/key-repository.js";
import { InMemoryServiceAccountStore, ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { UserCreateRequestCheck, type UsedRequestLedger } from "../../server/src/token/authority/user-create-request.js";

const SA = "sa@p.trustplane";

async function setup() {
  const registry = new ServiceAccountRegistry(new InMemoryServiceAccountStore());
  await registry.createAccount({ email: SA, actors: ["alice", "host:h1", "trustplane-server"] });
  const keys = new Map<string, KeyRecord>();
  const register = (principal: string, key: SigningKey, revoked = false) =>
    keys.set(key.keyId, { keyId: key.keyId, principal, algorithm: "Ed25519", jwk: JSON.stringify(key.publicJwk), createdAtMs: 1, revokedAtMs: revoked ? 2 : null });
  const used = new Set<string>();
  const ledger: UsedRequestLedger = {
    async markRequestUsed(u) {
      const k = `${u.digest}|${u.serviceAccount}`;
      if (used.has(k)) return false;
      used.add(k);
      return true;
    },
  };
  const check = new UserCreateRequestCheck({ keys: { get: async (id) => keys.get(id) }, accounts: registry, ledger });
  return { check, register };
}

const want = { serviceAccount: SA, scopes: ["s.read"], vmId: "vm1" };
const request = (key: SigningKey, scopes = ["s.read"]) => signVmCreateRequest({ requestId: Math.random().toString(36), name: "vm1", serviceAccounts: [{ email: SA, scopes }] }, [key]);

async function reason(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(TrustplaneError);
  return (e as TrustplaneError).reason;
}

describe("UserCreateRequestCheck", () => {
  it("accepts a user on the ACL once, and names them", async () => {
    const { check, register } = await setup();
    const alice = generateSigningKey("Ed25519");
    register("alice", alice);
    const env = request(alice);
    expect((await check.check(env, want)).principal).toBe("alice");
    expect(await reason(check.check(env, want))).toBe("USER_REQUEST_REPLAYED");
  });

  it("refuses host keys and the server's own key even when their principal is on the ACL", async () => {
    const { check, register } = await setup();
    const host = generateSigningKey("Ed25519");
    const server = generateSigningKey("Ed25519");
    register("host:h1", host);
    register("trustplane-server", server);
    expect(await reason(check.check(request(host), want))).toBe("UNKNOWN_KEY");
    expect(await reason(check.check(request(server), want))).toBe("UNKNOWN_KEY");
  });

  it("refuses revoked keys, other payload types, missing scopes and missing envelopes", async () => {
    const { check, register } = await setup();
    const alice = generateSigningKey("Ed25519");
    const old = generateSigningKey("Ed25519");
    register("alice", alice);
    register("alice", old, true);
    expect(await reason(check.check(request(old), want))).toBe("UNKNOWN_KEY");
    const wrongType = signEnvelope("application/vnd.trustplane.other+proto", request(alice).payload, [alice]);
    expect(await reason(check.check(wrongType, want))).toBe("PAYLOAD_TYPE_MISMATCH");
    expect(await reason(check.check(request(alice, ["s.other"]), want))).toBe("USER_REQUEST_MISMATCH");
    expect(await reason(check.check(undefined, want))).toBe("USER_REQUEST_MISSING");
  });

  it("refuses a user not on the ACL", async () => {
    const { check, register } = await setup();
    const bob = generateSigningKey("Ed25519");
    register("bob", bob);
    expect(await reason(check.check(request(bob), want))).toBe("NOT_ON_ACL");
  });
});
