// The authority's exchange of a host's long-term token for a VM's short-term token (RFC 8693
// in spirit): authenticate the secret for the host, check the VM holds it, narrow scopes,
// derive the audience from the scopes, mint. What the gRPC TokenService calls on a cache miss.
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import type { AccessTokenMinter, InstanceFacts, MintedToken } from "./access-token-minter.js";
import type { LongTermTokens, LongTermTokenRecord } from "./long-term-tokens.js";
import type { ServiceAccountRegistry } from "./service-accounts.js";

export interface TokenExchangeOptions {
  longTermTokens: LongTermTokens;
  accounts: ServiceAccountRegistry;
  minter: AccessTokenMinter;
  /**
   * Facts for identity tokens with format=full, from the authority's own VM records; the
   * agent's word is not taken for what goes into a signed token.
   */
  instanceFacts?: (vmId: string, hostId: string) => Promise<InstanceFacts | undefined>;
}

export interface ExchangeCaller {
  longTermToken: string;
  /** The authenticated host (from its mTLS identity at the gRPC edge). */
  hostId: string;
  vmId: string;
}

export class TokenExchange {
  constructor(private readonly options: TokenExchangeOptions) {}

  async accessToken(req: ExchangeCaller & { scopes?: readonly string[]; ttlSeconds?: number }): Promise<MintedToken & { scopes: string[] }> {
    const record = await this.authorize(req);
    const scopes = this.options.longTermTokens.narrowScopes(record, req.scopes);
    const audience = await this.options.accounts.audiencesForScopes(scopes);
    const minted = await this.options.minter.mintAccessToken({
      serviceAccount: record.serviceAccount,
      scopes,
      audience,
      vmId: req.vmId,
      hostId: req.hostId,
      ttlSeconds: req.ttlSeconds,
    });
    return { ...minted, scopes };
  }

  async identityToken(req: ExchangeCaller & { audience: string; format?: "standard" | "full"; ttlSeconds?: number }): Promise<MintedToken> {
    const record = await this.authorize(req);
    let instance: InstanceFacts | undefined;
    if (req.format === "full") {
      instance = await this.options.instanceFacts?.(req.vmId, req.hostId);
      if (!instance) throw new TrustplaneError("FAILED_PRECONDITION", "INSTANCE_FACTS_UNAVAILABLE", `no instance facts for VM ${req.vmId}; use format=standard`, "format");
    }
    return this.options.minter.mintIdentityToken({
      serviceAccount: record.serviceAccount,
      audience: req.audience,
      vmId: req.vmId,
      hostId: req.hostId,
      format: req.format ?? "standard",
      instance,
      ttlSeconds: req.ttlSeconds,
    });
  }

  private async authorize(req: ExchangeCaller): Promise<LongTermTokenRecord> {
    let { record, fromCache } = await this.options.longTermTokens.authenticate(req.longTermToken, req.hostId);
    const holds = (r: LongTermTokenRecord) => r.holders.some((h) => h.vmId === req.vmId && h.hostId === req.hostId);
    // A cached record may predate this VM joining the token: ask storage before refusing.
    if (fromCache && !holds(record)) record = (await this.options.longTermTokens.authenticate(req.longTermToken, req.hostId, { fresh: true })).record;
    // The host may hold the token for several VMs; it may mint only for those VMs, so a
    // compromised VM manager cannot stamp tokens for a VM that never had the account.
    if (!holds(record)) {
      throw new TrustplaneError("PERMISSION_DENIED", "VM_NOT_HOLDER", `VM ${req.vmId} does not hold ${record.accessor} on host ${req.hostId}`, "vm_id");
    }
    // A deleted account mints nothing more, even with a live long-term token.
    await this.options.accounts.get(record.serviceAccount);
    return record;
  }
}
