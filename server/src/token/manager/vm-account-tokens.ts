// The VM manager's side of the token area (seed 000): for each VM it obtains the long-term
// tokens of its service accounts from the authority (with the user's own signed call as
// proof), hands them to that VM's authorization process on its host, gives them again when
// that host's agent restarted, and releases its holds when accounts are removed or the VM
// terminates, so the authority revokes after the last VM.
import type { SignedClient } from "../../../../sdk/src/client/create-client.js";
import { CALL_STATEMENT_TYPE } from "../../../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import {
  LongTermTokenInfo,
  type HeldToken,
  type TokenAgentServiceService,
  type TokenServiceService,
  type VmAccount,
} from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { Logger } from "../../runtime/logger.js";
import { canonicalScopes } from "../authority/service-accounts.js";

export type TokenServiceClient = SignedClient<typeof TokenServiceService>;
export type TokenAgentClient = SignedClient<typeof TokenAgentServiceService>;

/** One account as a VM asks for it. */
export interface AccountRequest {
  email: string;
  scopes: string[];
}

/** Where the VM runs. */
export interface VmPlacement {
  vmId: string;
  hostId: string;
}

/**
 * The user's own signed call as the VM manager received it (CreateVm or SetVmServiceAccounts):
 * the authority verifies it itself, so the VM manager cannot stand in for the user.
 */
export interface ForwardedUserCall {
  statement: Uint8Array;
  signature: Uint8Array;
  keyId: string;
  /** The exact request bytes the statement's digest covers. */
  body: Uint8Array;
}

export interface VmAccountTokensOptions {
  /** A signed TokenService client (the server's service key); closed after each use. */
  authority(): TokenServiceClient;
  /** A signed TokenAgentService client for the host's agent; closed after each use. */
  agent(hostId: string): Promise<TokenAgentClient>;
  logger?: Logger;
}

/** What one VM's re-delivery did: accessors re-delivered (rotated) or shared, or why it failed. */
export interface RedeliveryOutcome {
  vmId: string;
  redelivered: string[];
  shared: string[];
  error?: TrustplaneError;
}

const pairKey = (email: string, scopes: readonly string[]) => `${email} ${canonicalScopes(scopes, "service_accounts.scopes").join(" ")}`;

export class VmAccountTokens {
  constructor(private readonly o: VmAccountTokensOptions) {}

  /** May `principal` launch VMs with the account? The authority's ACL decides. */
  async canActAs(principal: string, email: string): Promise<boolean> {
    const tokens = this.o.authority();
    try {
      const { account } = await tokens.getServiceAccount({ email });
      return account?.actAs.includes(principal) ?? false;
    } catch (e) {
      if (e instanceof TrustplaneError && e.status === "NOT_FOUND") return false;
      throw e;
    } finally {
      tokens.close();
    }
  }

  /** A new VM's accounts: issue (or join) each long-term token, then deliver them all at once. */
  async attach(vm: VmPlacement, accounts: readonly AccountRequest[], proof: ForwardedUserCall, requestId: string): Promise<void> {
    await this.change(vm, [], accounts, proof, requestId);
  }

  /**
   * Moves a running VM from `before` to `after`. New (account, scopes) pairs need the user's
   * proof; the VM's authorization process receives the complete list in one update (the
   * guest's wait_for_change listing wakes up), and only then are dropped pairs released.
   * If anything fails before delivery, the holds taken here are released again and the VM
   * keeps what it had.
   */
  async change(vm: VmPlacement, before: readonly AccountRequest[], after: readonly AccountRequest[], proof: ForwardedUserCall, requestId: string): Promise<void> {
    const had = new Set(before.map((a) => pairKey(a.email, a.scopes)));
    const wanted = new Set(after.map((a) => pairKey(a.email, a.scopes)));
    const added = after.filter((a) => !had.has(pairKey(a.email, a.scopes)));
    const kept = after.filter((a) => had.has(pairKey(a.email, a.scopes)));
    const dropped = before.filter((a) => !wanted.has(pairKey(a.email, a.scopes)));

    const agent = await this.o.agent(vm.hostId);
    const tokens = this.o.authority();
    const issued: LongTermTokenInfo[] = [];
    try {
      const held = (await agent.listHeldTokens({})).tokens;
      const delivered: VmAccount[] = [];
      try {
        for (const a of kept) {
          const token = held.find((h) => h.vmIds.includes(vm.vmId) && h.serviceAccount === a.email);
          if (!token) throw new TrustplaneError("FAILED_PRECONDITION", "ACCOUNT_NOT_HELD", `VM ${vm.vmId} does not hold ${a.email} on ${vm.hostId}; remove and add it again`, "service_accounts");
          delivered.push({ email: a.email, scopes: a.scopes, longTermToken: "", info: infoOf(token), sealedLongTermToken: new Uint8Array(0) });
        }
        for (const a of added) {
          const scopes = canonicalScopes(a.scopes, "service_accounts.scopes");
          // Another VM here already holds this pair's current version: join it, no new secret.
          const sameHost = held.find((h) => h.serviceAccount === a.email && sameScopes(h.scopes, scopes));
          const res = await tokens.issueLongTermToken({
            requestId: `lt-${requestId}-${vm.vmId}-${a.email}`,
            serviceAccount: a.email,
            scopes,
            hostId: vm.hostId,
            vmId: vm.vmId,
            heldVersion: sameHost?.version ?? 0,
            // The secret goes to the agent sealed: this process never holds it in clear.
            sealToHost: true,
            userRequest: { payloadType: CALL_STATEMENT_TYPE, payload: proof.statement, signatures: [{ keyId: proof.keyId, sig: proof.signature, certificate: new Uint8Array() }] },
            userRequestBody: proof.body,
          });
          issued.push(res.info!);
          delivered.push({ email: a.email, scopes, longTermToken: res.token, info: res.info, sealedLongTermToken: res.sealedToken });
        }
        await agent.updateVmAccounts({ requestId: `accounts-${requestId}-${vm.vmId}`, vmId: vm.vmId, accounts: delivered });
      } catch (e) {
        // Undo the holds taken for this change; a failed undo is logged by releaseOne and must
        // not hide why the change failed.
        for (const info of issued) await this.releaseOne(tokens, vm.vmId, info.accessor, `undo-${requestId}`).catch(() => undefined);
        throw e;
      }
      if (dropped.length > 0) {
        const droppedEmails = new Set(dropped.map((a) => a.email));
        const still = new Set(after.map((a) => a.email));
        for (const info of await this.heldBy(tokens, vm)) {
          if (!droppedEmails.has(info.serviceAccount)) continue;
          // A scope change of one account keeps the email: release only the old pair's token.
          if (still.has(info.serviceAccount) && wanted.has(pairKey(info.serviceAccount, info.scopes))) continue;
          await this.releaseOne(tokens, vm.vmId, info.accessor, requestId);
        }
      }
    } finally {
      tokens.close();
      agent.close();
    }
  }

  /**
   * The VM is gone (terminated): release every hold it has, wherever the VM manager's own
   * record might be incomplete (the authority's holder list is the truth). The authority
   * revokes a token whose last holder this was and pushes the revocation to the agents.
   */
  async release(vm: VmPlacement, requestId: string): Promise<{ released: string[]; revoked: string[] }> {
    const tokens = this.o.authority();
    const released: string[] = [];
    const revoked: string[] = [];
    try {
      for (const info of await this.heldBy(tokens, vm)) {
        if (await this.releaseOne(tokens, vm.vmId, info.accessor, requestId)) revoked.push(info.accessor);
        released.push(info.accessor);
      }
    } finally {
      tokens.close();
    }
    if (released.length > 0) this.o.logger?.info({ vmId: vm.vmId, released, revoked }, "VM released its long-term tokens");
    return { released, revoked };
  }

  /**
   * The host's agent came back (it restarted and registered again) and its VMs' authorization
   * processes with it, empty: agents keep long-term secrets in memory only. Each listed VM gets
   * every token the authority says it holds on that host and the agent lacks. The first VM
   * there to need a token has it re-delivered by the authority (a rotation, sealed to the
   * host); other VMs on the host then share that secret as a join does. A VM whose agent
   * still holds all its tokens costs one comparison and no call. Idempotent under requestId.
   */
  async redeliverHost(hostId: string, vmIds: readonly string[], requestId: string): Promise<RedeliveryOutcome[]> {
    if (vmIds.length === 0) return [];
    const agent = await this.o.agent(hostId);
    const tokens = this.o.authority();
    const outcomes: RedeliveryOutcome[] = [];
    try {
      const onHost = await this.listByHost(tokens, hostId);
      // accessor -> newest version the agent holds, and which VMs hold it.
      const held = new Map((await agent.listHeldTokens({})).tokens.map((h) => [h.accessor, { version: h.version, vmIds: new Set(h.vmIds) }]));
      for (const vmId of vmIds) {
        const mine = onHost.filter((info) => info.holders.some((h) => h.vmId === vmId && h.hostId === hostId));
        const lacking = mine.filter((info) => {
          const h = held.get(info.accessor);
          return !h || !h.vmIds.has(vmId) || h.version < info.version;
        });
        if (lacking.length === 0) continue;
        const outcome: RedeliveryOutcome = { vmId, redelivered: [], shared: [] };
        try {
          const delivered: VmAccount[] = [];
          for (const info of mine) {
            const h = held.get(info.accessor);
            if (h && h.version >= info.version) {
              // The agent has this version (this VM, or another one here): no new secret.
              delivered.push({ email: info.serviceAccount, scopes: info.scopes, longTermToken: "", info: LongTermTokenInfo.fromPartial({ accessor: info.accessor, version: h.version }), sealedLongTermToken: new Uint8Array(0) });
              if (!h.vmIds.has(vmId)) outcome.shared.push(info.accessor);
              continue;
            }
            const res = await tokens.redeliverLongTermToken({ requestId: `redeliver-${requestId}-${vmId}-${info.accessor}`, accessor: info.accessor, hostId, vmId });
            delivered.push({ email: info.serviceAccount, scopes: info.scopes, longTermToken: "", info: res.info, sealedLongTermToken: res.sealedToken });
            outcome.redelivered.push(info.accessor);
          }
          await agent.updateVmAccounts({ requestId: `accounts-redeliver-${requestId}-${vmId}`, vmId, accounts: delivered });
          for (const d of delivered) {
            const accessor = d.info!.accessor;
            const version = d.info!.version;
            const h = held.get(accessor);
            if (h) {
              h.version = Math.max(h.version, version);
              h.vmIds.add(vmId);
            } else held.set(accessor, { version, vmIds: new Set([vmId]) });
          }
          this.o.logger?.info({ hostId, vmId, redelivered: outcome.redelivered, shared: outcome.shared }, "service accounts re-delivered to a VM whose agent restarted");
        } catch (e) {
          outcome.error = e instanceof TrustplaneError ? e : new TrustplaneError("INTERNAL", "REDELIVERY_FAILED", (e as Error).message);
          this.o.logger?.warn({ hostId, vmId, reason: outcome.error.reason, err: outcome.error.message }, "could not re-deliver a VM's service accounts");
        }
        outcomes.push(outcome);
      }
    } finally {
      tokens.close();
      agent.close();
    }
    return outcomes;
  }

  private async listByHost(tokens: TokenServiceClient, hostId: string): Promise<LongTermTokenInfo[]> {
    const out: LongTermTokenInfo[] = [];
    let pageToken = "";
    do {
      const page = await tokens.listLongTermTokens({ hostId, pageSize: 500, pageToken });
      out.push(...page.tokens);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  }

  private async heldBy(tokens: TokenServiceClient, vm: VmPlacement): Promise<LongTermTokenInfo[]> {
    return (await this.listByHost(tokens, vm.hostId)).filter((info) => info.holders.some((h) => h.vmId === vm.vmId && h.hostId === vm.hostId));
  }

  private async releaseOne(tokens: TokenServiceClient, vmId: string, accessor: string, requestId: string): Promise<boolean> {
    try {
      return (await tokens.releaseLongTermToken({ requestId: `release-${requestId}-${vmId}-${accessor}`, accessor, vmId })).revoked;
    } catch (e) {
      // Nothing else can release this hold later: say so loudly, with the accessor (public).
      this.o.logger?.error({ vmId, accessor, err: (e as Error).message }, "could not release a long-term token hold");
      throw e;
    }
  }
}

function sameScopes(a: readonly string[], b: readonly string[]): boolean {
  const x = [...a].sort();
  return x.length === b.length && x.every((s, i) => s === b[i]);
}

function infoOf(h: HeldToken): LongTermTokenInfo {
  return LongTermTokenInfo.fromPartial({ accessor: h.accessor, serviceAccount: h.serviceAccount, scopes: h.scopes, vmIds: h.vmIds, version: h.version });
}
