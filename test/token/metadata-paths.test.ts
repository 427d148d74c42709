// Property test of the metadata endpoint's path and query parsing: whatever path a guest
// sends, the answer is a clean 2xx/4xx, and a token comes back only for a real token path
// of an account the VM holds.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAuthority, rawGet, startVm } from "./token-fixture.js";

const SA = "builder@acme.trustplane";

describe("metadata path parsing (property)", () => {
  let vm: Awaited<ReturnType<typeof startVm>>;
  beforeAll(async () => {
    const auth = await createAuthority();
    vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
  });
  afterAll(() => vm.stop());

  const segment = fc.oneof(
    fc.constantFrom("computeMetadata", "v1", "instance", "service-accounts", "default", SA, "reader@acme.trustplane", "token", "identity", "email", "scopes", "project", "project-id", "", ".", "..", "%2F", "%2e%2e", "%", "%zz", "default%2Ftoken"),
    fc.stringMatching(/^[A-Za-z0-9._~%-]{0,12}$/),
  );
  const path = fc.oneof(
    fc.array(segment, { minLength: 0, maxLength: 7 }).map((s) => "/" + s.join("/")),
    // Biased towards the account subtree, where tokens live.
    fc.tuple(
      fc.oneof(fc.constantFrom("default", SA, "reader@acme.trustplane", "builder%40acme.trustplane"), segment),
      fc.oneof(fc.constantFrom("token", "identity", "email", "scopes"), segment),
      fc.constantFrom("", "/"),
    ).map(([a, b, tail]) => `/computeMetadata/v1/instance/service-accounts/${a}/${b}${tail}`),
  );
  const query = fc.oneof(
    fc.constant(""),
    fc.constantFrom("?scopes=storage.read", "?scopes=queue.publish", "?alt=json", "?alt=text", "?recursive=true", "?audience=a", "?wait_for_change=true&timeout_sec=1&last_etag=x", "?alt=x", "?scopes=%2C%2C"),
  );

  it("never errors with 5xx and serves tokens only on real token paths", async () => {
    let served = 0;
    const tokenPaths = new Set([`/computeMetadata/v1/instance/service-accounts/default/token`, `/computeMetadata/v1/instance/service-accounts/${SA}/token`]);
    await fc.assert(
      fc.asyncProperty(path, query, async (p, q) => {
        const r = await rawGet(vm.port, p + q);
        if (r.status === 200 && r.body.includes("access_token")) served++;
        expect([200, 400, 403, 404]).toContain(r.status);
        if (r.body.includes("access_token")) {
          expect(tokenPaths.has(p.replace(/%40/gi, "@"))).toBe(true);
          expect(q).not.toContain("queue.publish");
        }
        if (p.startsWith("/computeMetadata/v1/instance/service-accounts/reader")) expect(r.status).not.toBe(200);
      }),
      { numRuns: 400 },
    );
    // The generator does reach real token paths, so the property is not vacuous.
    expect(served).toBeGreaterThan(0);
  });
});
