// AuthService on the server: principals, keys, policies, host join, the CA and the audit
// log. Implements the foundation's identity model: every key is a JWK named by its RFC 7638
// thumbprint, every mutation is audited, hosts join with a one-time token plus proof of
// possession of the key they register.
import type { PrincipalCache } from "./principal-cache.js";
import type { JsonWebKey } from "node:crypto";
import { createHash, randomBytes } from "node:crypto";
import {
  AuthServiceService,
  type AuditRecord as AuditRecordMessage,
  type Host,
  type Policy,
  type Principal,
  type PublicKey,
  PolicyEffect,
} from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { Certificate } from "../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { TrustplaneError, invalidArgument } from "../../../sdk/src/errors.js";
import { importVerificationKey, type SigningKey } from "../../../sdk/src/auth/index.js";
import { issueCertificate } from "../../../sdk/src/auth/certificate.js";
import type { Handlers } from "../runtime/auth/service-binder.js";
import type { Storage } from "../runtime/storage/storage.js";
import type { PrincipalRecord } from "../runtime/storage/principal-repository.js";
import type { HostRecord } from "../runtime/storage/host-repository.js";
import type { KeyCache } from "./key-cache.js";
import { verifyProofOfPossession } from "./proof-of-possession.js";
import type { NonceStore } from "../runtime/auth/nonce-store.js";

/** Operation classes a CA certificate may grant (issue 5). */
export const OPERATION_CLASSES = new Set(["lifecycle", "inspect", "memory", "patch", "carry"]);
const MAX_CERT_TTL_SECONDS = 12 * 3600;
const MAX_JOIN_TTL_SECONDS = 24 * 3600;
const NAME_RE = /^[a-z0-9][a-z0-9._:@-]{0,127}$/;
const KINDS = new Set(["user", "host", "service"]);

/** What a fresh principal may do when its creator gives no policy: prove who it is. */
export const DEFAULT_POLICY: PrincipalRecord["policy"] = {
  rules: [{ methods: ["/trustplane.auth.v1.AuthService/Echo", "/trustplane.auth.v1.AuthService/WhoAmI"], effect: "allow" }],
};

export interface AuthServiceDeps {
  storage: Storage;
  ca: SigningKey;
  keyCache: KeyCache;
  /** Invalidated when a principal or its policy changes here (the verifier's policy reads it). */
  principalCache?: PrincipalCache;
  nonces: NonceStore;
  skewMs: number;
  now?: () => number;
}

function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

function validateName(field: string, name: string): void {
  if (!NAME_RE.test(name)) throw invalidArgument(field, `${JSON.stringify(name)} is not a valid name: use 1-128 of a-z 0-9 . _ : @ - starting with a letter or digit`);
}

function policyFromMessage(p: Policy | undefined): PrincipalRecord["policy"] | undefined {
  if (!p || p.rules.length === 0) return undefined;
  return {
    rules: p.rules.map((r, i) => {
      if (r.methods.length === 0) throw invalidArgument(`policy.rules[${i}].methods`, "a rule needs at least one method or glob");
      for (const m of r.methods) {
        if (!/^\/[A-Za-z0-9_.]+\/(\*|[A-Za-z0-9_]+)$|^\*$/.test(m) && !/^\/[A-Za-z0-9_.]*\*$/.test(m)) {
          throw invalidArgument(`policy.rules[${i}].methods`, `${JSON.stringify(m)} is not a method path ("/pkg.Service/Method"), a service glob ("/pkg.Service/*") or "*"`);
        }
      }
      if (r.effect === PolicyEffect.POLICY_EFFECT_ALLOW) return { methods: r.methods, effect: "allow" as const };
      if (r.effect === PolicyEffect.POLICY_EFFECT_DENY) return { methods: r.methods, effect: "deny" as const };
      throw invalidArgument(`policy.rules[${i}].effect`, "must be POLICY_EFFECT_ALLOW or POLICY_EFFECT_DENY");
    }),
  };
}

function policyToMessage(p: PrincipalRecord["policy"]): Policy {
  return {
    rules: p.rules.map((r) => ({
      methods: r.methods,
      effect: r.effect === "allow" ? PolicyEffect.POLICY_EFFECT_ALLOW : PolicyEffect.POLICY_EFFECT_DENY,
    })),
  };
}

export function createAuthHandlers(deps: AuthServiceDeps): Partial<Handlers<typeof AuthServiceService>> {
  const { storage } = deps;
  const now = deps.now ?? Date.now;

  async function principalMessage(rec: PrincipalRecord): Promise<Principal> {
    const keys = await storage.keys.listFor(rec.name);
    return {
      name: rec.name,
      roles: rec.roles,
      policy: policyToMessage(rec.policy),
      keys: keys.map(
        (k): PublicKey => ({
          keyId: k.keyId,
          // Shared HMAC secrets are never exported, not even to admins.
          jwk: k.algorithm === "HS256" ? "" : k.jwk,
          algorithm: k.algorithm,
          createdAtMs: k.createdAtMs,
          revoked: k.revokedAtMs != null,
        }),
      ),
      createdAtMs: rec.createdAtMs,
      kind: rec.kind,
    };
  }

  function hostMessage(h: HostRecord): Host {
    return {
      hostId: h.hostId,
      signingKeyId: h.signingKeyId,
      signingJwk: h.signingJwk,
      sealingJwk: h.sealingJwk,
      address: h.address,
      labels: new Map(Object.entries(h.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      joinedAtMs: h.joinedAtMs,
      lastSeenMs: h.lastSeenMs,
    };
  }

  async function mustGetPrincipal(name: string): Promise<PrincipalRecord> {
    const rec = await storage.principals.get(name);
    if (!rec) throw new TrustplaneError("NOT_FOUND", "PRINCIPAL_NOT_FOUND", `principal ${JSON.stringify(name)} does not exist; create it with \`trustplane principal create\``, "principal");
    return rec;
  }

  return {
    async echo(req, ctx) {
      return { message: req.message, principal: ctx.caller.principal, keyId: ctx.caller.keyId, requestId: ctx.requestId };
    },

    async whoAmI(_req, ctx) {
      return { principal: ctx.caller.principal, keyId: ctx.caller.keyId, roles: ctx.caller.roles };
    },

    async createPrincipal(req, ctx) {
      validateName("name", req.name);
      const kind = req.kind || "user";
      if (!KINDS.has(kind)) throw invalidArgument("kind", `must be one of ${[...KINDS].join(", ")}`);
      for (const r of req.roles) validateName("roles", r);
      const rec: PrincipalRecord = {
        name: req.name,
        kind: kind as PrincipalRecord["kind"],
        roles: [...new Set(req.roles)].sort(),
        policy: policyFromMessage(req.policy) ?? DEFAULT_POLICY,
        createdAtMs: now(),
      };
      await storage.db.transaction(async () => {
        await storage.principals.create(rec);
        await storage.audit.append({ principal: ctx.caller.principal, action: "principal.create", target: rec.name, outcome: "ok", requestId: ctx.requestId, detail: { kind, roles: rec.roles } });
      });
      deps.principalCache?.invalidate(rec.name);
      return { principal: await principalMessage(rec) };
    },

    async getPrincipal(req) {
      return { principal: await principalMessage(await mustGetPrincipal(req.name)) };
    },

    async listPrincipals(req) {
      const page = await storage.principals.list({ pageSize: clampPage(req.pageSize), pageToken: req.pageToken || undefined });
      return { principals: await Promise.all(page.items.map(principalMessage)), nextPageToken: page.nextPageToken ?? "" };
    },

    async addKey(req, ctx) {
      await mustGetPrincipal(req.principal);
      let key;
      try {
        key = importVerificationKey(req.jwk);
      } catch (e) {
        if (e instanceof TrustplaneError) throw invalidArgument("jwk", e.message, e.reason);
        throw invalidArgument("jwk", `not a usable JWK: ${(e as Error).message}`);
      }
      const existing = await storage.keys.get(key.keyId);
      if (existing) {
        throw new TrustplaneError("ALREADY_EXISTS", "KEY_EXISTS", `key ${key.keyId} is already registered to ${existing.principal}`, "jwk");
      }
      const createdAtMs = now();
      await storage.db.transaction(async () => {
        await storage.keys.add({ keyId: key.keyId, principal: req.principal, algorithm: key.algorithm, jwk: JSON.stringify(key.jwk), createdAtMs });
        await storage.audit.append({ principal: ctx.caller.principal, action: "key.add", target: req.principal, outcome: "ok", requestId: ctx.requestId, detail: { keyId: key.keyId, algorithm: key.algorithm } });
      });
      return {
        key: { keyId: key.keyId, jwk: key.algorithm === "HS256" ? "" : JSON.stringify(key.jwk), algorithm: key.algorithm, createdAtMs, revoked: false },
      };
    },

    async revokeKey(req, ctx) {
      const rec = await storage.keys.get(req.keyId);
      if (!rec) throw new TrustplaneError("NOT_FOUND", "KEY_NOT_FOUND", `no key ${JSON.stringify(req.keyId)} is registered`, "key_id");
      const at = rec.revokedAtMs ?? now();
      if (rec.revokedAtMs == null) {
        await storage.db.transaction(async () => {
          await storage.keys.revoke(req.keyId, at);
          await storage.audit.append({ principal: ctx.caller.principal, action: "key.revoke", target: rec.principal, outcome: "ok", requestId: ctx.requestId, detail: { keyId: req.keyId } });
        });
      }
      deps.keyCache.invalidate(req.keyId);
      return { key: { keyId: rec.keyId, jwk: rec.algorithm === "HS256" ? "" : rec.jwk, algorithm: rec.algorithm, createdAtMs: rec.createdAtMs, revoked: true } };
    },

    async setPolicy(req, ctx) {
      const rec = await mustGetPrincipal(req.principal);
      const policy = policyFromMessage(req.policy);
      if (!policy) throw invalidArgument("policy.rules", "give at least one rule; an empty policy would lock the principal out silently");
      await storage.db.transaction(async () => {
        await storage.principals.setPolicy(req.principal, policy);
        await storage.audit.append({ principal: ctx.caller.principal, action: "principal.set_policy", target: req.principal, outcome: "ok", requestId: ctx.requestId, detail: { rules: policy.rules.length } });
      });
      deps.principalCache?.invalidate(req.principal);
      return { principal: await principalMessage({ ...rec, policy }) };
    },

    async createJoinToken(req, ctx) {
      if (req.hostId) validateName("host_id", req.hostId);
      const ttl = req.ttlSeconds || 3600;
      if (ttl <= 0 || ttl > MAX_JOIN_TTL_SECONDS) throw invalidArgument("ttl_seconds", `must be between 1 and ${MAX_JOIN_TTL_SECONDS}`);
      const joinToken = `tpjoin_${randomBytes(32).toString("base64url")}`;
      const expiresAtMs = now() + ttl * 1000;
      await storage.db.transaction(async () => {
        await storage.joinTokens.create({ tokenHash: hashToken(joinToken), hostId: req.hostId, createdBy: ctx.caller.principal, expiresAtMs });
        await storage.audit.append({ principal: ctx.caller.principal, action: "host.join_token.create", target: req.hostId || "*", outcome: "ok", requestId: ctx.requestId, detail: { expiresAtMs } });
      });
      return { joinToken, expiresAtMs };
    },

    async joinHost(req, ctx) {
      if (!req.joinToken) throw invalidArgument("join_token", "required; mint one with `trustplane host join-token`");
      validateName("host_id", req.hostId);
      let signing, sealing;
      try {
        signing = importVerificationKey(req.signingJwk);
      } catch (e) {
        throw invalidArgument("signing_jwk", (e as Error).message);
      }
      if (signing.algorithm !== "Ed25519") throw invalidArgument("signing_jwk", "host signing keys must be Ed25519");
      try {
        sealing = JSON.parse(req.sealingJwk) as JsonWebKey;
      } catch {
        throw invalidArgument("sealing_jwk", "not JSON");
      }
      if (sealing.kty !== "OKP" || sealing.crv !== "X25519" || typeof sealing.x !== "string" || "d" in sealing) {
        throw invalidArgument("sealing_jwk", "must be a public X25519 JWK (kty OKP, crv X25519, no private part)");
      }
      // Proof of possession first, so a stolen-but-unsigned request cannot burn the token.
      await verifyProofOfPossession({ key: signing, method: ctx.method, metadata: ctx.metadata, request: req, nonces: deps.nonces, skewMs: deps.skewMs, nowMs: now() });
      const t = now();
      const host: HostRecord = {
        hostId: req.hostId,
        signingKeyId: signing.keyId,
        signingJwk: JSON.stringify(signing.jwk),
        sealingJwk: JSON.stringify(sealing),
        address: req.address,
        labels: Object.fromEntries(req.labels),
        joinedAtMs: t,
        lastSeenMs: t,
      };
      const principal = `host:${req.hostId}`;
      await storage.db.transaction(async () => {
        const redeemed = await storage.joinTokens.redeem(hashToken(req.joinToken), t);
        if (redeemed.hostId && redeemed.hostId !== req.hostId) {
          throw new TrustplaneError("PERMISSION_DENIED", "HOST_MISMATCH", `this join token is for host ${redeemed.hostId}, not ${req.hostId}`, "host_id");
        }
        if (!(await storage.principals.get(principal))) {
          await storage.principals.create({ name: principal, kind: "host", roles: ["host"], policy: HOST_POLICY, createdAtMs: t });
          deps.principalCache?.invalidate(principal);
        }
        if (!(await storage.keys.get(signing.keyId))) {
          await storage.keys.add({ keyId: signing.keyId, principal, algorithm: "Ed25519", jwk: host.signingJwk, createdAtMs: t });
        }
        await storage.hosts.upsert(host);
        await storage.audit.append({ principal, action: "host.join", target: req.hostId, outcome: "ok", requestId: ctx.requestId, detail: { keyId: signing.keyId, joinTokenBy: redeemed.createdBy } });
      });
      const hostCertificate = issueCertificate(deps.ca, {
        serial: randomBytes(16).toString("hex"),
        principal,
        publicKeyJwk: host.signingJwk,
        operationClasses: [],
        hostPattern: req.hostId,
        notBeforeMs: t - 60_000,
        notAfterMs: t + 365 * 24 * 3600 * 1000,
        options: [],
      });
      return { host: hostMessage(host), caJwks: [JSON.stringify(deps.ca.publicJwk)], hostCertificate };
    },

    async listHosts(req) {
      const hosts = await storage.hosts.list();
      const size = clampPage(req.pageSize);
      const start = req.pageToken ? hosts.findIndex((h) => h.hostId > req.pageToken) : 0;
      const page = start < 0 ? [] : hosts.slice(start, start + size);
      const next = start >= 0 && start + size < hosts.length ? page[page.length - 1]!.hostId : "";
      return { hosts: page.map(hostMessage), nextPageToken: next };
    },

    async getCaKeys() {
      return { caJwks: [JSON.stringify(deps.ca.publicJwk)] };
    },

    async issueCertificate(req, ctx) {
      await mustGetPrincipal(req.principal);
      let key;
      try {
        key = importVerificationKey(req.publicKeyJwk);
      } catch (e) {
        throw invalidArgument("public_key_jwk", (e as Error).message);
      }
      if (key.algorithm === "HS256") throw invalidArgument("public_key_jwk", "certificates bind public keys; HMAC keys cannot be certified");
      for (const c of req.operationClasses) {
        if (!OPERATION_CLASSES.has(c)) throw invalidArgument("operation_classes", `unknown class ${JSON.stringify(c)}; use ${[...OPERATION_CLASSES].join(", ")}`);
      }
      if (!/^[a-z0-9.*?-]*$/.test(req.hostPattern)) throw invalidArgument("host_pattern", "use host-id characters with * and ? globs");
      const ttl = req.ttlSeconds || 3600;
      if (ttl <= 0 || ttl > MAX_CERT_TTL_SECONDS) throw invalidArgument("ttl_seconds", `operator certificates are short-lived: 1..${MAX_CERT_TTL_SECONDS} seconds`);
      const t = now();
      const serial = randomBytes(16).toString("hex");
      const certificate = issueCertificate(deps.ca, {
        serial,
        principal: req.principal,
        publicKeyJwk: JSON.stringify(key.jwk),
        operationClasses: [...new Set(req.operationClasses)].sort(),
        hostPattern: req.hostPattern,
        notBeforeMs: t - 30_000,
        notAfterMs: t + ttl * 1000,
        options: req.options,
      });
      await storage.audit.append({
        principal: ctx.caller.principal,
        action: "ca.issue_certificate",
        target: req.principal,
        outcome: "ok",
        requestId: ctx.requestId,
        detail: { serial, keyId: key.keyId, classes: req.operationClasses, hostPattern: req.hostPattern, ttl },
      });
      return { certificate };
    },

    async listAuditRecords(req) {
      const records = await storage.audit.list({ afterSeq: req.afterSeq, limit: clampPage(req.pageSize) });
      return {
        records: records.map(
          (r): AuditRecordMessage => ({
            seq: r.seq,
            timeMs: r.timeMs,
            principal: r.principal,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            requestId: r.requestId,
            detailJson: JSON.stringify(r.detail ?? {}),
            prevHash: r.prevHash,
            hash: r.hash,
          }),
        ),
      };
    },

    async verifyAudit() {
      const v = await storage.audit.verify();
      return { ok: v.ok, records: v.records, brokenAtSeq: v.brokenAtSeq ?? 0, problem: v.problem ?? "" };
    },
  };
}

/** Hosts may prove who they are; everything else they do goes through area services. */
export const HOST_POLICY: PrincipalRecord["policy"] = {
  rules: [
    { methods: ["/trustplane.auth.v1.AuthService/Echo", "/trustplane.auth.v1.AuthService/WhoAmI"], effect: "allow" },
    // The token agent: mint for its VMs, renew, watch pushes; the handlers check host_id is the caller's own.
    {
      methods: [
        "/trustplane.token.v1.TokenService/MintAccessToken",
        "/trustplane.token.v1.TokenService/MintAccessTokens",
        "/trustplane.token.v1.TokenService/MintIdentityToken",
        "/trustplane.token.v1.TokenService/RenewLongTermToken",
        "/trustplane.token.v1.TokenService/WatchTokenUpdates",
        "/trustplane.token.v1.TokenService/GetJwks",
        "/trustplane.token.v1.TokenService/OpenHostSession",
      ],
      effect: "allow",
    },
    // The VM agent: report capacity and heartbeat; the handlers check it speaks for itself.
    { methods: ["/trustplane.vm.v1.HostService/RegisterHost", "/trustplane.vm.v1.HostService/Heartbeat"], effect: "allow" },
    // The privileged executor: forward its own audit; the handler checks host_id is the caller's own.
    { methods: ["/trustplane.privileged.v1.PrivilegedAuditService/RecordHostAudit"], effect: "allow" },
    // The job bridge speaks for the job VMs on this host; the handlers check each job's VM runs here.
    { methods: ["/trustplane.job.v1.JobVmService/*"], effect: "allow" },
  ],
};

function clampPage(size: number): number {
  if (size < 0) throw invalidArgument("page_size", "must not be negative");
  return Math.min(size || 100, 1000);
}

export { Certificate };
