// The per-VM authorization process: renewal at half-life ±10 % jitter, versioned rotations
// with no failed request in between, pushed revocation, stale health over HTTP, and long-term
// secrets that never reach the log; re-attaching a VM's endpoint on its old port after a restart.
import { createServer, type AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { HostTokenManager } from "../../server/src/token/agent/token-agent-area.js";
import { renewalDelayMs } from "../../server/src/token/agent/vm-authorization-process.js";
import { createAuthority, rawGet, startVm } from "./token-fixture.js";

const SA = "builder@acme.trustplane";
const SA2 = "reader@acme.trustplane";
const V1 = "/computeMetadata/v1";

describe("renewal schedule", () => {
  it("spreads renewals uniformly over half-life ±10 %", () => {
    const life = 24 * 3600_000;
    const samples = Array.from({ length: 20_000 }, () => renewalDelayMs(0, life));
    const ratios = samples.map((d) => d / (life / 2));
    expect(Math.min(...ratios)).toBeGreaterThanOrEqual(0.9);
    expect(Math.max(...ratios)).toBeLessThanOrEqual(1.1);
    // Uses the whole band, not a point: the ends are reached and ten bins are about even.
    expect(Math.min(...ratios)).toBeLessThan(0.901);
    expect(Math.max(...ratios)).toBeGreaterThan(1.099);
    const bins = new Array(10).fill(0) as number[];
    for (const r of ratios) bins[Math.min(9, Math.floor((r - 0.9) / 0.02))]!++;
    for (const b of bins) expect(b).toBeGreaterThan(1_700), expect(b).toBeLessThan(2_300);
    const mean = ratios.reduce((a, b) => a + b, 0) / ratios.length;
    expect(Math.abs(mean - 1)).toBeLessThan(0.005);
  });

  it("the process schedules each account's renewal from that function", async () => {
    const auth = await createAuthority();
    for (const [r, expected] of [[0, 0.45], [0.5, 0.5], [0.999999, 0.55]] as const) {
      const vm = await startVm(auth, { vmId: `vm-${r}`, accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }], random: () => r });
      const issued = vm.grants[0]!;
      const at = vm.vm.renewalAt(SA)!;
      expect((at - issued.issuedAtMs) / (issued.expiresAtMs - issued.issuedAtMs)).toBeCloseTo(expected, 4);
      await vm.stop();
    }
  });
});

describe("VM authorization process", () => {
  it("renews at half-life, installs the new version, and no request fails across rotations", async () => {
    // Two-second long-term tokens: renewal after ~1 s, then again ~1 s later.
    const auth = await createAuthority({ ttlMs: 2_000 });
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }], renew: true, random: () => 0.5 });
    try {
      let n = 0;
      const failures: string[] = [];
      const deadline = Date.now() + 2_600;
      // Identity tokens with fresh audiences force an upstream exchange on every request.
      const worker = async () => {
        while (Date.now() < deadline) {
          const r = await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=a${n++}`);
          if (r.status !== 200) failures.push(`${r.status} ${r.body}`);
        }
      };
      await Promise.all([worker(), worker(), worker()]);
      expect(failures).toEqual([]);
      expect(n).toBeGreaterThan(50);
      expect(vm.vm.heldVersion(SA)).toBeGreaterThanOrEqual(3);
    } finally {
      await vm.stop();
    }
  });

  it("applies pushed rotations by version and ignores stale ones", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    const other = await startVm(auth, { vmId: "vm-9", hostId: "host-b", accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    try {
      // host-b joining rotated the shared token; host-a got version 2 pushed.
      expect(vm.vm.heldVersion(SA)).toBe(2);
      await vm.vm.applyUpdate({ kind: "ROTATED", hostId: "host-a", accessor: vm.grants[0]!.accessor, serviceAccount: SA, scopes: ["storage.read"], version: 1, token: "tplt_" + "B".repeat(43), expiresAtMs: Date.now() + 1e6 });
      expect(vm.vm.heldVersion(SA)).toBe(2);
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).status).toBe(200);
      expect((await rawGet(other.port, `${V1}/instance/service-accounts/default/token`)).status).toBe(200);
    } finally {
      await vm.stop();
      await other.stop();
    }
  });

  it("drops accounts the VM manager removed (ACCOUNTS_CHANGED) and tokens revoked by push", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }, { serviceAccount: SA2, scopes: ["storage.read"] }] });
    try {
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/`)).body).toBe(`${SA}/\ndefault/\n${SA2}/\n`);
      await auth.hub.publish({ kind: "ACCOUNTS_CHANGED", hostId: "host-a", vmId: "vm-1", accounts: [{ serviceAccount: SA2, scopes: ["storage.read"], accessor: vm.grants[1]!.accessor }] });
      // The remaining account becomes the default.
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/`)).body).toBe(`default/\n${SA2}/\n`);
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/email`)).body).toBe(SA2);
      await auth.longTermTokens.release({ accessor: vm.grants[1]!.accessor, vmId: "vm-1" });
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/`)).body).toBe("");
    } finally {
      await vm.stop();
    }
  });

  it("replaces an account's grant when the VM manager re-acquires a different long-term token", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    try {
      // Rotate the first token a few times so its version is ahead of any fresh token's.
      await auth.longTermTokens.rotate(vm.grants[0]!.accessor);
      await auth.longTermTokens.rotate(vm.grants[0]!.accessor);
      expect(vm.vm.heldVersion(SA)).toBe(3);
      const before = JSON.parse((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).body).access_token;
      const wider = await auth.longTermTokens.acquire({ principal: "user:alice", serviceAccount: SA, scopes: ["storage.read", "storage.write"], hostId: "host-a", vmId: "vm-1" });
      vm.vm.addAccount({ ...wider, token: wider.token! });
      expect(vm.vm.heldVersion(SA)).toBe(1);
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/scopes`)).body).toBe("storage.read\nstorage.write\n");
      const after = JSON.parse((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).body).access_token;
      expect(after).not.toBe(before);
      expect(decodeJwt(after).scope).toBe("storage.read storage.write");
    } finally {
      await vm.stop();
    }
  });

  it("health reports stale serving while the authority is unreachable", async () => {
    const auth = await createAuthority();
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    try {
      expect(JSON.parse((await rawGet(vm.port, "/trustplane/health", {})).body)).toMatchObject({ status: "SERVING" });
      await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`);
      vm.state.down = true;
      // A miss (new audience) reaches for the authority and fails; the cached token stays served.
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=new`)).status).toBe(503);
      const h = await rawGet(vm.port, "/trustplane/health", {});
      expect(h.status).toBe(200);
      expect(JSON.parse(h.body)).toMatchObject({ status: "SERVING_STALE", message: "serving stale cache, authority unreachable", upstreamReachable: false });
      expect((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).status).toBe(200);
      expect((await rawGet(vm.port, "/trustplane/health", { "X-Forwarded-For": "1.2.3.4" })).status).toBe(403);
    } finally {
      await vm.stop();
    }
  });

  it("never writes a long-term secret or a short-term token to the log", async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString("utf8"));
        done();
      },
    });
    const logger = createLogger({ level: "debug", destination: sink, name: "vm-auth-test" });
    const auth = await createAuthority({ ttlMs: 1_000 });
    const secrets: string[] = [];
    const originalRenew = auth.longTermTokens.renew.bind(auth.longTermTokens);
    auth.longTermTokens.renew = async (token, host) => {
      const r = await originalRenew(token, host);
      secrets.push(token);
      if (r.token) secrets.push(r.token);
      return r;
    };
    const originalAcquire = auth.longTermTokens.acquire.bind(auth.longTermTokens);
    auth.longTermTokens.acquire = async (input) => {
      const r = await originalAcquire(input);
      if (r.token) secrets.push(r.token);
      return r;
    };
    const vm = await startVm(auth, { accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }, { serviceAccount: SA2, scopes: ["storage.read"] }], renew: true, logger, random: () => 0 });
    const served: string[] = [];
    try {
      for (let i = 0; i < 3; i++) served.push(JSON.parse((await rawGet(vm.port, `${V1}/instance/service-accounts/default/token`)).body).access_token);
      served.push((await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=x`)).body);
      await rawGet(vm.port, `${V1}/instance/service-accounts/default/token?scopes=queue.publish`);
      await new Promise((r) => setTimeout(r, 700)); // renewal at 0.45 s
      expect(vm.vm.heldVersion(SA)).toBeGreaterThanOrEqual(2);
      vm.state.down = true;
      await rawGet(vm.port, `${V1}/instance/service-accounts/default/identity?audience=y`);
      vm.state.down = false;
      await auth.longTermTokens.revoke(vm.grants[1]!.accessor);
    } finally {
      await vm.stop();
    }
    const log = lines.join("");
    expect(log).toMatch(/long-term token rotated/);
    expect(log).toMatch(/long-term token revoked/);
    expect(log).toContain(vm.grants[0]!.accessor);
    expect(secrets.length).toBeGreaterThanOrEqual(3);
    for (const s of secrets) expect(log).not.toContain(s.slice(5));
    for (const t of served) expect(log).not.toContain(t.split(".")[2]);
    expect(log).not.toMatch(/tplt_[A-Za-z0-9_-]{10}/);
    expect(log).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
  });
});

describe("re-attach after an agent restart", () => {
  // Nothing here reaches the authority: attaching only binds the endpoint.
  const manager = () => new HostTokenManager({ hostId: "h1", client: {} as never, unseal: () => "" });

  it("binds the VM's endpoint on the very address asked for", async () => {
    const first = manager();
    const at = await first.attachVm({ vmId: "vm-a", hostname: "a", projectId: "p", accounts: [] });
    await first.stop();
    const second = manager();
    expect(await second.attachVm({ vmId: "vm-a", hostname: "a", projectId: "p", accounts: [] }, at)).toEqual(at);
    await second.stop();
  });

  it("refuses with UNAVAILABLE METADATA_PORT_UNAVAILABLE when the port is taken, and keeps no half-attached VM", async () => {
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(0, "127.0.0.1", () => r()));
    const { port } = squatter.address() as AddressInfo;
    const m = manager();
    try {
      const e = await m.attachVm({ vmId: "vm-b", hostname: "b", projectId: "p", accounts: [] }, { host: "127.0.0.1", port }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TrustplaneError);
      expect(e).toMatchObject({ status: "UNAVAILABLE", reason: "METADATA_PORT_UNAVAILABLE" });
      expect(m.vm("vm-b")).toBeUndefined();
    } finally {
      await m.stop();
      await new Promise((r) => squatter.close(r));
    }
  });
});
