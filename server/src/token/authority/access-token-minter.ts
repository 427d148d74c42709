// Mints the short-term tokens of seed 000: EdDSA-signed JWT access tokens (RFC 9068 shape:
// iss, sub = service account, aud = service, scope, exp <= 1 h, iat, jti, VM and host claims)
// and identity tokens whose audience the caller chooses, as GCE's `identity?audience=`.
import { KeyObject, randomBytes, sign as signBytes } from "node:crypto";
import type { CryptoKey } from "jose";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import { canonicalScopes } from "./service-accounts.js";
import type { SigningKeyRing } from "./signing-keys.js";

/** The hard ceiling of the design: no short-term token lives longer than an hour. */
export const MAX_SHORT_TERM_TTL_SECONDS = 3600;

/** JOSE `typ` of access tokens (RFC 9068), so an identity token is never taken for one. */
export const ACCESS_TOKEN_TYP = "at+jwt";
export const IDENTITY_TOKEN_TYP = "JWT";

export interface AccessTokenRequest {
  serviceAccount: string;
  scopes: readonly string[];
  /** The service(s) the token is for; derived from the scopes by the caller. */
  audience: string | readonly string[];
  vmId: string;
  hostId: string;
  /** Defaults to the minter's maximum; above it is INVALID_ARGUMENT. */
  ttlSeconds?: number;
}

/** What `format=full` adds on GCE: facts about the instance the token was minted for. */
export interface InstanceFacts {
  instanceId: string;
  instanceName: string;
  projectId: string;
  projectNumber: string;
  zone: string;
}

export interface IdentityTokenRequest {
  serviceAccount: string;
  audience: string;
  vmId: string;
  hostId: string;
  format?: "standard" | "full";
  /** Required for format "full". */
  instance?: InstanceFacts;
  ttlSeconds?: number;
}

export interface MintedToken {
  jwt: string;
  /** Seconds from now until `exp`, as the metadata server's `expires_in`. */
  expiresIn: number;
  expiresAtMs: number;
  jti: string;
  kid: string;
}

/** Claims carried by every access token; resource servers read these. */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  scope: string;
  iat: number;
  exp: number;
  jti: string;
  tp_vm: string;
  tp_host: string;
}

export interface AccessTokenMinterOptions {
  keys: SigningKeyRing;
  /** `iss` of every token, e.g. https://tokens.trustplane.example. */
  issuer: string;
  /** Configurable lower than one hour, never higher. */
  maxTtlSeconds?: number;
  now?: () => number;
}

export class AccessTokenMinter {
  readonly issuer: string;
  readonly maxTtlSeconds: number;
  private readonly keys: SigningKeyRing;
  private readonly now: () => number;
  private readonly jtis = new JtiPool();
  /** Encoded protected headers by kid and typ: the same few strings for every token. */
  private readonly headers = new Map<string, string>();

  constructor(options: AccessTokenMinterOptions) {
    const max = options.maxTtlSeconds ?? MAX_SHORT_TERM_TTL_SECONDS;
    if (!Number.isInteger(max) || max <= 0 || max > MAX_SHORT_TERM_TTL_SECONDS) {
      throw invalidArgument("maxTtlSeconds", `must be a whole number of seconds in 1..${MAX_SHORT_TERM_TTL_SECONDS}`, "TTL_OUT_OF_RANGE");
    }
    if (options.issuer.length === 0) throw invalidArgument("issuer", "must not be empty");
    this.keys = options.keys;
    this.issuer = options.issuer;
    this.maxTtlSeconds = max;
    this.now = options.now ?? Date.now;
  }

  async mintAccessToken(req: AccessTokenRequest): Promise<MintedToken> {
    requireId("serviceAccount", req.serviceAccount);
    requireId("vmId", req.vmId);
    requireId("hostId", req.hostId);
    const scopes = canonicalScopes(req.scopes);
    const audience = typeof req.audience === "string" ? [req.audience] : [...req.audience];
    if (audience.length === 0 || audience.some((a) => a.length === 0)) {
      throw invalidArgument("audience", "an access token needs at least one non-empty audience", "AUDIENCE_EMPTY");
    }
    const ttl = this.ttl(req.ttlSeconds);
    const payload = {
      scope: scopes.join(" "),
      tp_vm: req.vmId,
      tp_host: req.hostId,
    };
    return this.sign(payload, ACCESS_TOKEN_TYP, req.serviceAccount, audience.length === 1 ? audience[0]! : audience.sort(), ttl);
  }

  async mintIdentityToken(req: IdentityTokenRequest): Promise<MintedToken> {
    requireId("serviceAccount", req.serviceAccount);
    requireId("vmId", req.vmId);
    requireId("hostId", req.hostId);
    validateIdentityAudience(req.audience);
    const ttl = this.ttl(req.ttlSeconds);
    const format = req.format ?? "standard";
    const payload: Record<string, unknown> = {
      // As GCE: azp and email name the account, email_verified is always true.
      azp: req.serviceAccount,
      email: req.serviceAccount,
      email_verified: true,
      tp_vm: req.vmId,
      tp_host: req.hostId,
    };
    if (format === "full") {
      if (!req.instance) throw invalidArgument("instance", "format=full needs the instance facts", "INSTANCE_FACTS_MISSING");
      payload.google = {
        compute_engine: {
          instance_id: req.instance.instanceId,
          instance_name: req.instance.instanceName,
          project_id: req.instance.projectId,
          project_number: req.instance.projectNumber,
          zone: req.instance.zone,
        },
      };
    } else if (format !== "standard") {
      throw invalidArgument("format", `"${String(format).slice(0, 32)}" is not a format; use "standard" or "full"`, "FORMAT_INVALID");
    }
    return this.sign(payload, IDENTITY_TOKEN_TYP, req.serviceAccount, req.audience, ttl);
  }

  private header(kid: string, typ: string): string {
    const k = `${kid} ${typ}`;
    let h = this.headers.get(k);
    if (h === undefined) {
      if (this.headers.size > 64) this.headers.clear();
      h = b64json({ alg: "EdDSA", kid, typ });
      this.headers.set(k, h);
    }
    return h;
  }

  private ttl(requested: number | undefined): number {
    const ttl = requested ?? this.maxTtlSeconds;
    if (!Number.isInteger(ttl) || ttl <= 0 || ttl > this.maxTtlSeconds) {
      throw invalidArgument("ttlSeconds", `must be a whole number of seconds in 1..${this.maxTtlSeconds}`, "TTL_OUT_OF_RANGE");
    }
    return ttl;
  }

  private async sign(
    payload: Record<string, unknown>,
    typ: string,
    subject: string,
    audience: string | string[],
    ttlSeconds: number,
  ): Promise<MintedToken> {
    const key = this.keys.current();
    const nowMs = this.now();
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + ttlSeconds;
    const jti = this.jtis.next();
    // Compact JWS by hand with node:crypto's one-shot Ed25519 (about 40 µs here) rather than
    // jose's SignJWT over async WebCrypto (about 150 µs): minting is the authority's hot path.
    // Same bytes a JOSE library produces; every test verifies the result with jose.
    const header = this.header(key.kid, typ);
    const claims = b64json({ ...payload, iss: this.issuer, sub: subject, aud: audience, iat, exp, jti });
    const signingInput = `${header}.${claims}`;
    const jwt = `${signingInput}.${signBytes(null, Buffer.from(signingInput, "ascii"), keyObject(key.privateKey)).toString("base64url")}`;
    const expiresAtMs = exp * 1000;
    return { jwt, expiresIn: Math.max(0, Math.floor((expiresAtMs - nowMs) / 1000)), expiresAtMs, jti, kid: key.kid };
  }
}

/**
 * 128-bit random token ids drawn from a pooled buffer: one RAND_bytes call per 256 ids
 * instead of per token (a per-token randomBytes(16) showed up as a tenth of a mint's CPU).
 */
class JtiPool {
  private pool = Buffer.alloc(0);
  private offset = 0;

  next(): string {
    if (this.offset + 16 > this.pool.length) {
      this.pool = randomBytes(16 * 256);
      this.offset = 0;
    }
    const id = this.pool.toString("base64url", this.offset, this.offset + 16);
    // Each id is handed out once: its bytes are wiped as they are used.
    this.pool.fill(0, this.offset, this.offset + 16);
    this.offset += 16;
    return id;
  }
}

function b64json(value: unknown): string {
  return Buffer.from(JSON.stringify(value), "utf8").toString("base64url");
}

// One KeyObject per CryptoKey, converted once.
const keyObjects = new WeakMap<CryptoKey, KeyObject>();
function keyObject(key: CryptoKey): KeyObject {
  let k = keyObjects.get(key);
  if (!k) {
    k = KeyObject.from(key as unknown as Parameters<typeof KeyObject.from>[0]);
    keyObjects.set(key, k);
  }
  return k;
}

function requireId(field: string, value: string): void {
  if (typeof value !== "string" || value.length === 0 || value.length > 256) {
    throw invalidArgument(field, "must be a non-empty string of at most 256 characters");
  }
}

/** The audience of an identity token is caller-chosen text; bound its size and characters. */
export function validateIdentityAudience(audience: string): void {
  if (typeof audience !== "string" || audience.length === 0) {
    throw new TrustplaneError("INVALID_ARGUMENT", "AUDIENCE_EMPTY", "non-empty audience parameter required", "audience");
  }
  if (audience.length > 2048 || /[\x00-\x1f\x7f]/.test(audience)) {
    throw invalidArgument("audience", "must be at most 2048 printable characters", "AUDIENCE_INVALID");
  }
}
