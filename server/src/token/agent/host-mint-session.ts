// The agent's mint session (seed 000, host side): one OpenHostSession call signed with the host
// key yields an HMAC-SHA256 call-signing key, sealed to this host, which signs every mint call
// until half its life has passed; then a new one is opened. If the server no longer knows the
// key (expired, revoked, another replica's view lagging), the call is redone with the host key.
import { randomBytes } from "node:crypto";
import { importSigningKey, type SigningKey } from "../../../../sdk/src/auth/index.js";
import type { SignedClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { TokenServiceService } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { Logger } from "../../runtime/logger.js";

type TokenClient = SignedClient<typeof TokenServiceService>;

export interface HostMintSessionOptions {
  hostId: string;
  /** Signed with the host's own (Ed25519) key. */
  hostClient: TokenClient;
  /** A TokenService client that signs with `key`. */
  connect(key: SigningKey): TokenClient;
  /** Opens the sealed session key (HPKE, this host's X25519 key, "host session" purpose). */
  unseal(sealed: Uint8Array): string;
  logger?: Logger;
  /** After a failed open, how long to mint with the host key before trying again. Default 30 s. */
  retryAfterMs?: number;
  now?: () => number;
}

interface Session {
  keyId: string;
  client: TokenClient;
  renewAtMs: number;
}

// Refusals by the call verifier that say the session key itself is no good any more.
const KEY_REFUSED = new Set(["UNKNOWN_KEY", "SIGNATURE_INVALID"]);

export class HostMintSession {
  private session?: Session;
  private opening?: Promise<Session | undefined>;
  private retryAtMs = 0;
  private readonly now: () => number;
  private readonly retired = new Set<TokenClient>();
  /** Calls signed with the session key and with the host key (health, tests). */
  readonly stats = { sessionCalls: 0, hostKeyCalls: 0, opened: 0 };

  constructor(private readonly o: HostMintSessionOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Runs one mint call with the session key, or with the host key when there is none. */
  async call<T>(fn: (client: TokenClient) => Promise<T>): Promise<T> {
    const session = await this.current();
    if (!session) {
      this.stats.hostKeyCalls++;
      return fn(this.o.hostClient);
    }
    try {
      this.stats.sessionCalls++;
      return await fn(session.client);
    } catch (e) {
      if (!(e instanceof TrustplaneError && e.status === "UNAUTHENTICATED" && KEY_REFUSED.has(e.reason))) throw e;
      this.o.logger?.warn({ keyId: session.keyId, reason: e.reason }, "mint session key refused; minting with the host key and reopening");
      if (this.session === session) this.session = undefined;
      this.retire(session.client);
      this.stats.hostKeyCalls++;
      return fn(this.o.hostClient);
    }
  }

  /** The key id of the open session (tests, health). */
  keyId(): string | undefined {
    return this.session?.keyId;
  }

  close(): void {
    this.session?.client.close();
    for (const c of this.retired) c.close();
    this.retired.clear();
    this.session = undefined;
  }

  private async current(): Promise<Session | undefined> {
    const nowMs = this.now();
    if (this.session && nowMs < this.session.renewAtMs) return this.session;
    if (nowMs < this.retryAtMs) return this.session;
    this.opening ??= this.open().finally(() => (this.opening = undefined));
    // A session past its half-life is still valid: keep using it while the next one opens.
    return this.session ?? (await this.opening);
  }

  private async open(): Promise<Session | undefined> {
    try {
      const res = await this.o.hostClient.openHostSession({ requestId: `session-${randomBytes(8).toString("hex")}`, hostId: this.o.hostId });
      const key = importSigningKey(this.o.unseal(res.sealedKey));
      if (key.algorithm !== "HS256" || key.keyId !== res.keyId) throw new TrustplaneError("DATA_LOSS", "SESSION_KEY_MISMATCH", "the sealed session key is not the one the server named");
      const nowMs = this.now();
      const previous = this.session;
      this.session = { keyId: key.keyId, client: this.o.connect(key), renewAtMs: nowMs + Math.max(0, (Number(res.expiresAtMs) - nowMs) / 2) };
      if (previous) this.retire(previous.client);
      this.stats.opened++;
      this.o.logger?.info({ keyId: key.keyId, expiresAtMs: Number(res.expiresAtMs) }, "mint session opened");
      return this.session;
    } catch (e) {
      this.retryAtMs = this.now() + (this.o.retryAfterMs ?? 30_000);
      this.o.logger?.warn({ err: (e as Error).message }, "could not open a mint session; minting with the host key");
      return this.session;
    }
  }

  /** Closes a replaced client once the calls it carries have had time to finish. */
  private retire(client: TokenClient): void {
    this.retired.add(client);
    setTimeout(() => {
      this.retired.delete(client);
      client.close();
    }, 30_000).unref();
  }
}
