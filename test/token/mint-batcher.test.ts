// The agent's mint batching: a lone mint goes out at once; mints asked for while a call is in
// flight go out together; each answer (token or refusal with its status and reason) reaches
// its own caller; a failed call fails every mint it carried.
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import type { MintAccessTokensRequest, MintAccessTokensResponse } from "../../sdk/src/gen/trustplane/token/v1/token.js";
import { MintBatcher } from "../../server/src/token/agent/mint-batcher.js";

const req = (vmId: string) => ({ longTermToken: "tplt_x", hostId: "h1", vmId, scopes: [], audience: "" });

function authority() {
  const calls: MintAccessTokensRequest[] = [];
  let release: () => void = () => undefined;
  let gate = Promise.resolve();
  const send = async (r: MintAccessTokensRequest): Promise<MintAccessTokensResponse> => {
    calls.push(r);
    await gate;
    return {
      results: r.requests.map((m) =>
        m.vmId.startsWith("bad")
          ? { token: undefined, errorStatus: "PERMISSION_DENIED", errorReason: "VM_NOT_HOLDER", errorMessage: `VM ${m.vmId} does not hold it` }
          : { token: { accessToken: `jwt-${m.vmId}`, expiresInSeconds: 3600, tokenType: "Bearer" }, errorStatus: "", errorReason: "", errorMessage: "" },
      ),
    };
  };
  return {
    calls,
    send,
    hold() {
      gate = new Promise((r) => (release = r));
    },
    release: () => release(),
  };
}

describe("mint batcher", () => {
  it("sends a lone mint at once and batches what queues up behind a call in flight", async () => {
    const a = authority();
    const b = new MintBatcher(a.send);
    expect((await b.mint(req("v0"))).accessToken).toBe("jwt-v0");
    expect(a.calls.map((c) => c.requests.length)).toEqual([1]);
    a.hold();
    const first = b.mint(req("v1"));
    const rest = Array.from({ length: 20 }, (_, i) => b.mint(req(`w${i}`)));
    a.release();
    expect((await first).accessToken).toBe("jwt-v1");
    expect((await Promise.all(rest)).map((r) => r.accessToken)).toEqual(Array.from({ length: 20 }, (_, i) => `jwt-w${i}`));
    expect(a.calls.map((c) => c.requests.length)).toEqual([1, 1, 20]);
  });

  it("gives each caller its own refusal, and fails every mint of a call that failed", async () => {
    const a = authority();
    const b = new MintBatcher(a.send);
    a.hold();
    const pending = b.mint(req("v1"));
    const good = b.mint(req("v2"));
    const bad = b.mint(req("bad-3")).catch((e: unknown) => e);
    a.release();
    await pending;
    expect((await good).accessToken).toBe("jwt-v2");
    const e = (await bad) as TrustplaneError;
    expect(e).toBeInstanceOf(TrustplaneError);
    expect([e.status, e.reason]).toEqual(["PERMISSION_DENIED", "VM_NOT_HOLDER"]);

    const down = new MintBatcher(async () => {
      throw new TrustplaneError("UNAVAILABLE", "AUTHORITY_UNREACHABLE", "down");
    });
    const all = await Promise.all([down.mint(req("a")), down.mint(req("b"))].map((p) => p.catch((x: unknown) => x)));
    expect(all.map((x) => (x as TrustplaneError).reason)).toEqual(["AUTHORITY_UNREACHABLE", "AUTHORITY_UNREACHABLE"]);
  });

  it("never puts more than the batch limit in one call", async () => {
    const a = authority();
    const b = new MintBatcher(a.send, 1, 8);
    a.hold();
    const all = [b.mint(req("v0")), ...Array.from({ length: 20 }, (_, i) => b.mint(req(`w${i}`)))];
    a.release();
    await Promise.all(all);
    expect(Math.max(...a.calls.map((c) => c.requests.length))).toBe(8);
  });
});
