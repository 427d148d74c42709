// The token agent as an AgentArea (seed 000, host side): one signed TokenService client with
// the host key, one WatchTokenUpdates stream fanned out to the VMs, and a VmTokenManager that
// runs one VM authorization process (own loopback metadata endpoint) per VM. The VM area calls
// the manager in-process; the VM manager on the server reaches it through TokenAgentService.
import { createHash } from "node:crypto";
import { createClient, type SignedClient } from "../../../../sdk/src/client/create-client.js";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import {
  TokenAgentServiceService,
  TokenServiceService,
  TokenUpdateKind,
  type VmAccount,
  type WatchTokenUpdatesResponse,
} from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import type { AgentArea } from "../../processes/area.js";
import { SERVER_PRINCIPAL } from "../../processes/server-keys.js";
import type { CallContext } from "../../runtime/auth/service-binder.js";
import type { Logger } from "../../runtime/logger.js";
import { openSealedToken } from "../authority/host-token-sealer.js";
import { ACCESSOR_PREFIX } from "../authority/long-term-tokens.js";
import type { TokenUpdate } from "../authority/token-update-hub.js";
import { INSTANCE_ZONE, numericProjectId } from "../instance-identity.js";
import { HostMintSession } from "./host-mint-session.js";
import { MintBatcher } from "./mint-batcher.js";
import type { TokenUpstream } from "./token-cache.js";
import { VmAuthorizationProcess, type AccountGrant, type LongTermTokenRenewer } from "./vm-authorization-process.js";

/** One service account on a VM, with the long-term token the VM manager obtained for it. */
export interface VmAccountInput {
  email: string;
  scopes: string[];
  /**
   * The secret from IssueLongTermToken. Empty when the authority only added this VM as a
   * holder of a token the host already holds (held_version): the agent then shares the
   * secret another VM on this host holds under the same accessor.
   */
  longTermToken: string;
  /** From IssueLongTermTokenResponse.info; without it the token cannot follow rotations. */
  accessor?: string;
  version?: number;
  issuedAtMs?: number;
  expiresAtMs?: number;
}

export interface VmRecord {
  vmId: string;
  hostname: string;
  projectId: string;
  accounts: VmAccountInput[];
}

/** What the VM area calls: attach a VM's accounts, change them at runtime, detach. */
export interface VmTokenManager {
  /**
   * Starts the VM's authorization process; the driver forwards 169.254.169.254:80 to the answer.
   * `at` re-binds the address a VM that outlived an agent restart is already routed to
   * (UNAVAILABLE METADATA_PORT_UNAVAILABLE when that port is taken).
   */
  attachVm(vm: VmRecord, at?: { host: string; port: number }): Promise<{ host: string; port: number }>;
  updateAccounts(vmId: string, accounts: VmAccountInput[]): Promise<void>;
  /**
   * The VM's account list changed on the control plane: drop at once what is no longer on
   * it (additions need their long-term tokens and arrive through updateAccounts).
   */
  retainAccounts(vmId: string, accounts: { email: string; scopes: string[] }[]): void;
  detachVm(vmId: string): Promise<void>;
}

/** A long-term token this host holds, as the VM manager and the resync see it (no secret). */
export interface HeldTokenView {
  accessor: string;
  serviceAccount: string;
  scopes: string[];
  version: number;
  vmIds: string[];
}

type TokenClient = SignedClient<typeof TokenServiceService>;

export interface HostTokenManagerOptions {
  hostId: string;
  client: TokenClient;
  /** Signs mint calls with a session key when given (else every mint uses `client`). */
  mintSession?: HostMintSession;
  /** Opens a rotated secret sealed to this host (HPKE, host X25519 key). */
  unseal: (sealed: Uint8Array) => string;
  logger?: Logger;
  /** Loopback address each VM endpoint binds (port 0: one free port per VM). */
  bindHost?: string;
}

function toGrant(a: VmAccountInput): AccountGrant {
  const now = Date.now();
  return {
    serviceAccount: a.email,
    scopes: a.scopes,
    // A token given without its accessor still works for minting; it just cannot be
    // matched to pushed rotations, so name it by a digest of the secret (never the secret).
    accessor: a.accessor || `local_${createHash("sha256").update(a.longTermToken).digest("base64url").slice(0, 22)}`,
    version: a.version ?? 1,
    token: a.longTermToken,
    issuedAtMs: a.issuedAtMs ?? now,
    expiresAtMs: a.expiresAtMs ?? now + 24 * 3600_000,
  };
}

export class HostTokenManager implements VmTokenManager {
  private readonly vms = new Map<string, VmAuthorizationProcess>();
  private readonly upstream: TokenUpstream;
  /** Access-token mints of every VM on this host, batched while a call is in flight. */
  readonly batcher: MintBatcher;
  private readonly renewer: LongTermTokenRenewer;

  constructor(private readonly o: HostTokenManagerOptions) {
    const client = o.client;
    const mint = <T>(fn: (c: TokenClient) => Promise<T>) => (o.mintSession ? o.mintSession.call(fn) : fn(client));
    const batcher = (this.batcher = new MintBatcher(async (batch) => {
      try {
        return await mint((c) => c.mintAccessTokens(batch));
      } catch (e) {
        if (!(e instanceof TrustplaneError && e.status === "UNIMPLEMENTED")) throw e;
        // An authority from before batching: one call per mint, each answered on its own.
        const results = await Promise.all(
          batch.requests.map((r) =>
            mint((c) => c.mintAccessToken(r)).then(
              (token) => ({ token, errorStatus: "", errorReason: "", errorMessage: "" }),
              (err: unknown) => {
                if (!(err instanceof TrustplaneError)) throw err;
                return { token: undefined, errorStatus: err.status, errorReason: err.reason, errorMessage: err.message };
              },
            ),
          ),
        );
        return { results };
      }
    }));
    this.upstream = {
      async mintAccessToken(req) {
        const res = await batcher.mint({ longTermToken: req.longTermToken, hostId: req.hostId, vmId: req.vmId, scopes: req.scopes ?? [], audience: "" });
        return { token: res.accessToken, expiresAtMs: Date.now() + res.expiresInSeconds * 1000 };
      },
      async mintIdentityToken(req) {
        const res = await mint((c) => c.mintIdentityToken({ longTermToken: req.longTermToken, hostId: req.hostId, vmId: req.vmId, audience: req.audience, format: req.format ?? "standard" }));
        return { token: res.idToken, expiresAtMs: Date.now() + res.expiresInSeconds * 1000 };
      },
    };
    this.renewer = {
      async renew(req) {
        const res = await client.renewLongTermToken({ requestId: `renew-${Date.now()}-${Math.random().toString(36).slice(2)}`, token: req.longTermToken, hostId: req.hostId, sealToHost: true });
        const token = res.sealedToken.length > 0 ? o.unseal(res.sealedToken) : res.token || undefined;
        return { version: res.version, token, issuedAtMs: Date.now(), expiresAtMs: res.expiresAtMs };
      },
    };
  }

  async attachVm(vm: VmRecord, at?: { host: string; port: number }): Promise<{ host: string; port: number }> {
    if (!vm.vmId) throw invalidArgument("vm_id", "must not be empty");
    if (this.vms.has(vm.vmId)) throw new TrustplaneError("ALREADY_EXISTS", "VM_ATTACHED", `VM ${vm.vmId} is already attached; use updateAccounts`, "vm_id");
    const process = new VmAuthorizationProcess({
      identity: {
        vmId: vm.vmId,
        hostId: this.o.hostId,
        hostname: vm.hostname || vm.vmId,
        instanceName: vm.hostname || vm.vmId,
        zone: INSTANCE_ZONE,
        projectId: vm.projectId || "trustplane",
        numericProjectId: numericProjectId(vm.projectId || "trustplane"),
      },
      upstream: this.upstream,
      renewer: this.renewer,
      unseal: async (sealed) => this.o.unseal(Buffer.from(sealed, "base64url")),
      logger: this.o.logger?.child({ vmId: vm.vmId }),
    });
    for (const a of vm.accounts) process.addAccount(this.grant(a));
    this.vms.set(vm.vmId, process);
    try {
      const address = await process.start(at?.host ?? this.o.bindHost ?? "127.0.0.1", at?.port ?? 0);
      return { host: address.address, port: address.port };
    } catch (e) {
      this.vms.delete(vm.vmId);
      await process.stop();
      const code = (e as NodeJS.ErrnoException).code;
      if (at && (code === "EADDRINUSE" || code === "EADDRNOTAVAIL" || code === "EACCES")) {
        throw new TrustplaneError("UNAVAILABLE", "METADATA_PORT_UNAVAILABLE", `VM ${vm.vmId}'s metadata endpoint ${at.host}:${at.port} cannot be bound again (${code}); its guest is routed there`, "vm_id");
      }
      throw e;
    }
  }

  async updateAccounts(vmId: string, accounts: VmAccountInput[]): Promise<void> {
    const process = this.require(vmId);
    const keep = new Set(accounts.map((a) => a.email));
    for (const { email } of process.accounts()) if (!keep.has(email)) process.removeAccount(email);
    for (const a of accounts) process.addAccount(this.grant(a));
  }

  retainAccounts(vmId: string, accounts: { email: string; scopes: string[] }[]): void {
    const process = this.vms.get(vmId);
    if (!process) return;
    const keep = new Set(accounts.map((a) => `${a.email} ${[...new Set(a.scopes)].sort().join(" ")}`));
    for (const a of process.accounts()) if (!keep.has(`${a.email} ${a.scopes.join(" ")}`)) process.removeAccount(a.email);
  }

  /** Every long-term token held on this host, with the newest version any VM has of it. */
  listHeld(): HeldTokenView[] {
    const byAccessor = new Map<string, HeldTokenView>();
    for (const [vmId, p] of this.vms) {
      for (const g of p.grants()) {
        const seen = byAccessor.get(g.accessor);
        if (!seen) byAccessor.set(g.accessor, { accessor: g.accessor, serviceAccount: g.serviceAccount, scopes: [...g.scopes], version: g.version, vmIds: [vmId] });
        else {
          seen.version = Math.max(seen.version, g.version);
          seen.vmIds.push(vmId);
        }
      }
    }
    return [...byAccessor.values()];
  }

  /** A grant with its secret: the given one, or the one this host already holds for the accessor. */
  private grant(a: VmAccountInput): AccountGrant {
    if (a.longTermToken) return toGrant(a);
    if (!a.accessor) throw invalidArgument("long_term_token", "give the long-term token, or the accessor of one this host already holds");
    for (const p of this.vms.values()) {
      const held = p.grantFor(a.accessor);
      if (held) return { ...held, serviceAccount: a.email, scopes: a.scopes };
    }
    throw new TrustplaneError("FAILED_PRECONDITION", "LONG_TERM_TOKEN_NOT_HELD", `this host holds no long-term token ${a.accessor}; issue it without held_version`, "long_term_token");
  }

  async detachVm(vmId: string): Promise<void> {
    const process = this.vms.get(vmId);
    if (!process) return;
    this.vms.delete(vmId);
    await process.stop();
  }

  /** The mint session, when this manager has one (tests, health). */
  session(): HostMintSession | undefined {
    return this.o.mintSession;
  }

  /** The VM's authorization process (tests, health). */
  vm(vmId: string): VmAuthorizationProcess | undefined {
    return this.vms.get(vmId);
  }

  /** Applies one pushed update to every VM on this host (each ignores what is not its own). */
  async apply(message: WatchTokenUpdatesResponse): Promise<void> {
    const update = toUpdate(this.o.hostId, message);
    if (!update) return;
    if (update.kind === "ROTATED" && message.sealedToken.length > 0) {
      // Open once for all VMs sharing the token, not once per VM.
      update.token = this.o.unseal(message.sealedToken);
    }
    for (const p of this.vms.values()) await p.applyUpdate(update);
  }

  async stop(): Promise<void> {
    for (const id of [...this.vms.keys()]) await this.detachVm(id);
  }

  private require(vmId: string): VmAuthorizationProcess {
    const p = this.vms.get(vmId);
    if (!p) throw new TrustplaneError("NOT_FOUND", "VM_NOT_ATTACHED", `VM ${vmId} is not attached to this host's token agent`, "vm_id");
    return p;
  }
}

function toUpdate(hostId: string, m: WatchTokenUpdatesResponse): TokenUpdate | undefined {
  switch (m.kind) {
    case TokenUpdateKind.TOKEN_UPDATE_KIND_ROTATED:
      return { kind: "ROTATED", hostId, accessor: m.accessor, serviceAccount: m.serviceAccount, scopes: m.scopes, version: m.version, expiresAtMs: m.expiresAtMs };
    case TokenUpdateKind.TOKEN_UPDATE_KIND_REVOKED:
      return { kind: "REVOKED", hostId, accessor: m.accessor, serviceAccount: m.serviceAccount, version: m.version, reason: m.reason };
    case TokenUpdateKind.TOKEN_UPDATE_KIND_ACCOUNTS_CHANGED:
      return {
        kind: "ACCOUNTS_CHANGED",
        hostId,
        vmId: m.vmId,
        accessor: m.accessor || undefined,
        accounts: m.accounts.map((a) => ({ serviceAccount: a.serviceAccount, scopes: a.scopes, accessor: a.accessor })),
      };
    default:
      return undefined;
  }
}

/** Where a watch stream stands: the last seq seen and the replica that numbered it. */
export interface WatchPosition {
  afterSeq: number;
  replicaId: string;
}

/**
 * Keeps one WatchTokenUpdates stream open, resuming after the last seq seen; reconnects with
 * capped backoff. Every (re)connect tells the authority what this host holds, so when the
 * stream cannot resume exactly (server restart, another replica, a backlog that no longer
 * reaches back, a replica that lost its LISTEN connection) the authority resynchronises it
 * from storage: revocations it missed, and fresh secrets for rotations it missed.
 */
export function watchUpdates(o: {
  client: TokenClient;
  hostId: string;
  onUpdate: (m: WatchTokenUpdatesResponse) => Promise<void>;
  /** What this host holds right now (sent at every connect). */
  held?: () => HeldTokenView[];
  /** Resume from here instead of from now. */
  resumeFrom?: WatchPosition;
  logger?: Logger;
}): { stop(): void; connected(): boolean; position(): WatchPosition } {
  let stopped = false;
  let connected = false;
  let stream: { cancel(): void } | undefined;
  let afterSeq = o.resumeFrom?.afterSeq ?? 0;
  let replicaId = o.resumeFrom?.replicaId ?? "";
  let delay = 250;
  let timer: NodeJS.Timeout | undefined;
  const run = async () => {
    while (!stopped) {
      try {
        // Only the authority's own tokens can be resynchronised (not locally named ones).
        const held = (o.held?.() ?? []).filter((h) => h.accessor.startsWith(ACCESSOR_PREFIX));
        const s = o.client.watchTokenUpdates({ hostId: o.hostId, afterSeq, replicaId, held });
        stream = s;
        connected = true;
        for await (const m of s) {
          delay = 250;
          afterSeq = m.seq;
          replicaId = m.replicaId;
          await o.onUpdate(m).catch((e: Error) => o.logger?.warn({ err: e.message, accessor: m.accessor }, "could not apply a token update"));
        }
      } catch (e) {
        if (!stopped) o.logger?.warn({ err: (e as Error).message, retryMs: delay }, "token update stream broke; reconnecting");
      }
      connected = false;
      if (stopped) break;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, delay);
        timer.unref();
      });
      delay = Math.min(delay * 2, 10_000);
    }
  };
  void run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      stream?.cancel();
    },
    connected: () => connected,
    position: () => ({ afterSeq, replicaId }),
  };
}

const managers = new Map<string, HostTokenManager>();

/** The running token manager of an agent in this process, by host id (for the VM area). */
export function vmTokenManager(hostId: string): VmTokenManager | undefined {
  return managers.get(hostId);
}

/** Same, with the concrete type (tests inspect the per-VM processes). */
export function hostTokenManager(hostId: string): HostTokenManager | undefined {
  return managers.get(hostId);
}

/** `unseal` opens a secret the VM manager carried sealed to this host. */
function fromMessage(a: VmAccount, unseal: (sealed: Uint8Array) => string): VmAccountInput {
  return {
    email: a.email,
    scopes: a.scopes,
    longTermToken: a.sealedLongTermToken.length > 0 ? unseal(a.sealedLongTermToken) : a.longTermToken,
    accessor: a.info?.accessor || undefined,
    version: a.info?.version || undefined,
    issuedAtMs: a.info?.issuedAtMs || undefined,
    expiresAtMs: a.info?.expiresAtMs || undefined,
  };
}

/** Only the VM manager (the server's certified service key) may attach VMs on an agent. */
function requireVmManager(ctx: CallContext): void {
  if (ctx.caller.principal !== SERVER_PRINCIPAL) {
    throw new TrustplaneError("PERMISSION_DENIED", "NOT_VM_MANAGER", `principal ${ctx.caller.principal} may not attach VMs to this host`);
  }
}

export const tokenAgentArea: AgentArea = {
  name: "token",
  async start(ctx) {
    const client = createClient(TokenServiceService, ctx.serverAddress, { key: ctx.signingKey, certificate: ctx.hostCertificate, credentials: ctx.serverCredentials });
    const mintSession = new HostMintSession({
      hostId: ctx.hostId,
      hostClient: client,
      connect: (key) => createClient(TokenServiceService, ctx.serverAddress, { key, credentials: ctx.serverCredentials }),
      unseal: (sealed) => openSealedToken(ctx.sealing.privateKey, ctx.hostId, sealed, "host session"),
      logger: ctx.logger,
    });
    const unseal = (sealed: Uint8Array) => openSealedToken(ctx.sealing.privateKey, ctx.hostId, sealed);
    const manager = new HostTokenManager({
      hostId: ctx.hostId,
      client,
      mintSession,
      unseal,
      logger: ctx.logger,
    });
    const watcher = watchUpdates({ client, hostId: ctx.hostId, onUpdate: (m) => manager.apply(m), held: () => manager.listHeld(), logger: ctx.logger });
    managers.set(ctx.hostId, manager);
    ctx.bind(TokenAgentServiceService, {
      async attachVm(req, call) {
        requireVmManager(call);
        const at = await manager.attachVm({ vmId: req.vmId, hostname: req.hostname, projectId: req.projectId, accounts: req.accounts.map((a) => fromMessage(a, unseal)) });
        return { metadataHost: at.host, metadataPort: at.port };
      },
      async updateVmAccounts(req, call) {
        requireVmManager(call);
        await manager.updateAccounts(req.vmId, req.accounts.map((a) => fromMessage(a, unseal)));
        return {};
      },
      async detachVm(req, call) {
        requireVmManager(call);
        await manager.detachVm(req.vmId);
        return {};
      },
      async listHeldTokens(_req, call) {
        requireVmManager(call);
        return { tokens: manager.listHeld() };
      },
    });
    return {
      async stop() {
        watcher.stop();
        managers.delete(ctx.hostId);
        await manager.stop();
        mintSession.close();
        client.close();
      },
    };
  },
};
