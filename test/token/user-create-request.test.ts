// The authority's check of the user's signed VM create request, in isolation: only a
// registered, unrevoked user key vouches (not a host's, not the server's own), the payload
// type is pinned, the request must name the account and scopes, the ACL decides, replays fail.
import { describe, expect, it } from "vitest";
import { CALL_STATEMENT_TYPE, generateSigningKey, signCall, signEnvelope, type SigningKey } from "../../sdk/src/auth/index.js";
import { CreateVmRequest, SetVmServiceAccountsRequest } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import type { SignedEnvelope } from "../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { signVmCreateRequest } from "../../sdk/src/token/index.js";
import type { KeyRecord } from "../../server/src/runtime/storage/key-repository.js";
import { InMemoryServiceAccountStore, ServiceAccountRegistry } from "../../server/src/token/authority/service-accounts.js";
import { UserCreateRequestCheck, type UsedRequestLedger } from "../../server/src/token/authority/user-create-request.js";

const SA = "sa@p.trustplane";

async function setup(now?: () => number) {
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
  const check = new UserCreateRequestCheck({ keys: { get: async (id) => keys.get(id) }, accounts: registry, ledger, now });
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

  describe("a forwarded user call (statement + request bytes)", () => {
    const forward = (key: SigningKey, method: string, body: Uint8Array): SignedEnvelope => {
      const call = signCall({ method, requestBytes: body, key });
      return { payloadType: CALL_STATEMENT_TYPE, payload: call.statement, signatures: [{ keyId: call.keyId, sig: call.signature, certificate: new Uint8Array(0) }] };
    };
    const createBody = (scopes = ["s.read"]) => CreateVmRequest.encode(CreateVmRequest.fromPartial({ requestId: "r", name: "vm1", serviceAccounts: [{ email: SA, scopes }] })).finish();

    it("accepts the user's own CreateVm call whose bytes match the signed digest", async () => {
      const { check, register } = await setup();
      const alice = generateSigningKey("Ed25519");
      register("alice", alice);
      const body = createBody();
      const env = forward(alice, "/trustplane.vm.v1.VmService/CreateVm", body);
      expect((await check.check(env, want, body)).principal).toBe("alice");
      expect(await reason(check.check(env, want, body))).toBe("USER_REQUEST_REPLAYED");
    });

    it("refuses other bytes than were signed, other methods, stale calls, and a change for another VM", async () => {
      const alice = generateSigningKey("Ed25519");
      const { check, register } = await setup();
      register("alice", alice);
      const signed = createBody();
      const env = forward(alice, "/trustplane.vm.v1.VmService/CreateVm", signed);
      expect(await reason(check.check(env, want, createBody(["s.read", "s.write"])))).toBe("USER_REQUEST_MISMATCH");
      expect(await reason(check.check(env, want))).toBe("USER_REQUEST_MALFORMED");
      expect(await reason(check.check(forward(alice, "/trustplane.vm.v1.VmService/DeleteVm", signed), want, signed))).toBe("USER_REQUEST_MISMATCH");

      const late = await setup(() => Date.now() + 3600_000);
      late.register("alice", alice);
      expect(await reason(late.check.check(forward(alice, "/trustplane.vm.v1.VmService/CreateVm", signed), want, signed))).toBe("USER_REQUEST_STALE");

      const change = (vmId: string) => SetVmServiceAccountsRequest.encode(SetVmServiceAccountsRequest.fromPartial({ requestId: vmId, vmId, serviceAccounts: [{ email: SA, scopes: ["s.read"] }] })).finish();
      const other = change("vm-other");
      expect(await reason(check.check(forward(alice, "/trustplane.vm.v1.VmService/SetVmServiceAccounts", other), want, other))).toBe("USER_REQUEST_MISMATCH");
      const mine = change("vm1");
      expect((await check.check(forward(alice, "/trustplane.vm.v1.VmService/SetVmServiceAccounts", mine), want, mine)).principal).toBe("alice");
    });
  });
});
