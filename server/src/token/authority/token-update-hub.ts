// In-process pub/sub of versioned long-term token updates per host (ROTATED, REVOKED,
// ACCOUNTS_CHANGED): the TokenService server stream subscribes per agent, and a bridge
// (PostgreSQL LISTEN/NOTIFY) carries updates between replicas. Implements seed 000's push.
import { randomUUID } from "node:crypto";

export interface RotatedUpdate {
  kind: "ROTATED";
  hostId: string;
  accessor: string;
  serviceAccount: string;
  scopes: string[];
  /** Versions only grow; an agent ignores an update older than what it holds. */
  version: number;
  /** The new secret, in-process only. Never present on updates that crossed a bridge. */
  token?: string;
  /** The new secret sealed to the host's key; what crosses a bridge. */
  sealedToken?: string;
  expiresAtMs: number;
}

export interface RevokedUpdate {
  kind: "REVOKED";
  hostId: string;
  accessor: string;
  serviceAccount: string;
  version: number;
  reason: string;
}

export interface AccountsChangedUpdate {
  kind: "ACCOUNTS_CHANGED";
  hostId: string;
  vmId: string;
  /** The token the VM stopped holding; agents drop only that one from the VM. */
  accessor?: string;
  /** The VM's complete account list after the change. */
  accounts: { serviceAccount: string; scopes: string[]; accessor: string }[];
}

export type TokenUpdate = RotatedUpdate | RevokedUpdate | AccountsChangedUpdate;
/** An update as delivered: `seq` orders updates per host within one replica. */
export type DeliveredUpdate = TokenUpdate & { seq: number };

/** Seals a rotated secret to the host before it leaves the process (HPKE to the host key). */
export interface TokenSealer {
  seal(hostId: string, token: string): Promise<string>;
}

/** What travels between replicas; never a plaintext long-term token. */
export interface BridgedUpdate {
  origin: string;
  update: TokenUpdate;
}

/**
 * Carries updates to the other replicas: a PostgreSQL implementation NOTIFYs on publish and
 * LISTENs to call `onRemote` listeners. Payloads must stay small (NOTIFY limit 8000 bytes).
 */
export interface TokenUpdateBridge {
  publish(message: BridgedUpdate): Promise<void>;
  onRemote(listener: (message: BridgedUpdate) => void): () => void;
  /**
   * Called when the bridge may have missed remote updates (its connection dropped and came
   * back): what this replica delivers can no longer be trusted to be complete.
   */
  onGap?(listener: () => void): () => void;
}

type Listener = (update: DeliveredUpdate) => void;

interface HostChannel {
  seq: number;
  /** Recent updates, so a reconnecting stream resumes after the last seq it saw. */
  backlog: DeliveredUpdate[];
  /** Each listener with what to call when updates for it may have been lost. */
  listeners: Map<Listener, (() => void) | undefined>;
}

export interface TokenUpdateHubOptions {
  /** Updates kept per host for resumption. */
  backlogSize?: number;
  replicaId?: string;
  /**
   * Seals rotated secrets at publish time, so the backlog keeps a sealed copy a resuming
   * stream can still use (without one, a replayed rotation carries no secret).
   */
  sealer?: TokenSealer;
}

export class TokenUpdateHub {
  readonly replicaId: string;
  private readonly hosts = new Map<string, HostChannel>();
  private readonly anyListeners = new Set<(update: TokenUpdate | undefined) => void>();
  private readonly backlogSize: number;
  private bridge?: { bridge: TokenUpdateBridge; sealer: TokenSealer; detach: () => void };

  private readonly sealer?: TokenSealer;

  constructor(options: TokenUpdateHubOptions = {}) {
    this.backlogSize = options.backlogSize ?? 64;
    this.replicaId = options.replicaId ?? randomUUID();
    this.sealer = options.sealer;
  }

  /**
   * Connects the hub to other replicas. Every ROTATED update is sealed to its host before it
   * is handed to the bridge, so a database notification never carries a usable secret.
   */
  attachBridge(bridge: TokenUpdateBridge, sealer: TokenSealer): void {
    this.bridge?.detach();
    const detachRemote = bridge.onRemote((message) => {
      if (message.origin === this.replicaId) return;
      const update = message.update;
      if (update.kind === "ROTATED" && update.token !== undefined) return; // never accept plaintext from outside
      this.deliver(update);
    });
    const detachGap = bridge.onGap?.(() => this.markGap()) ?? (() => undefined);
    this.bridge = {
      bridge,
      sealer,
      detach: () => {
        detachRemote();
        detachGap();
      },
    };
  }

  /** Delivers locally, then forwards to the other replicas when a bridge is attached. */
  async publish(update: TokenUpdate): Promise<DeliveredUpdate> {
    const sealer = this.sealer ?? this.bridge?.sealer;
    if (update.kind === "ROTATED" && update.token !== undefined && update.sealedToken === undefined && sealer) {
      update = { ...update, sealedToken: await sealer.seal(update.hostId, update.token) };
    }
    const delivered = this.deliver(update);
    if (this.bridge) {
      let outbound: TokenUpdate = update;
      if (update.kind === "ROTATED") {
        const { token, ...rest } = update;
        outbound = token === undefined || rest.sealedToken !== undefined ? rest : { ...rest, sealedToken: await this.bridge.sealer.seal(update.hostId, token) };
      }
      await this.bridge.bridge.publish({ origin: this.replicaId, update: outbound });
    }
    return delivered;
  }

  /**
   * Subscribes to one host's updates. With `afterSeq`, replays the backlog past it first
   * (a reconnecting stream); if the backlog no longer reaches back that far, `onGap` runs
   * and the subscriber must resynchronise from storage.
   */
  subscribe(hostId: string, listener: Listener, options: { afterSeq?: number; onGap?: () => void } = {}): () => void {
    const channel = this.channel(hostId);
    if (options.afterSeq !== undefined) {
      const oldest = channel.backlog[0]?.seq ?? channel.seq + 1;
      if (options.afterSeq < oldest - 1 || options.afterSeq > channel.seq) options.onGap?.();
      for (const u of channel.backlog) if (u.seq > options.afterSeq) listener(u);
    }
    // Also called later if this replica may have missed updates (markGap).
    channel.listeners.set(listener, options.onGap);
    return () => {
      channel.listeners.delete(listener);
    };
  }

  /**
   * Updates may have been lost (the bridge to the other replicas dropped): forget the
   * backlog and skip a sequence number, so no stream can resume as if nothing happened,
   * and tell every subscriber to resynchronise.
   */
  markGap(): void {
    for (const l of [...this.anyListeners]) l(undefined);
    for (const channel of this.hosts.values()) {
      channel.seq += 1;
      channel.backlog = [];
      for (const onGap of [...channel.listeners.values()]) {
        try {
          onGap?.();
        } catch {
          // One broken stream must not keep the others from resynchronising.
        }
      }
    }
  }

  /**
   * Every update for any host, local or from another replica, and every gap (`update`
   * undefined): what caches of token state invalidate on.
   */
  onAny(listener: (update: TokenUpdate | undefined) => void): () => void {
    this.anyListeners.add(listener);
    return () => this.anyListeners.delete(listener);
  }

  /** Current sequence number for a host (the last delivered update). */
  lastSeq(hostId: string): number {
    return this.hosts.get(hostId)?.seq ?? 0;
  }

  subscriberCount(hostId: string): number {
    return this.hosts.get(hostId)?.listeners.size ?? 0;
  }

  private deliver(update: TokenUpdate): DeliveredUpdate {
    for (const l of [...this.anyListeners]) l(update);
    const channel = this.channel(update.hostId);
    const delivered = { ...update, seq: ++channel.seq } as DeliveredUpdate;
    // The backlog keeps sealed or secret-free copies only: a plaintext token lives no
    // longer than the synchronous delivery to the streams connected right now.
    const kept = delivered.kind === "ROTATED" && delivered.token !== undefined ? { ...delivered, token: undefined } : delivered;
    channel.backlog.push(kept);
    if (channel.backlog.length > this.backlogSize) channel.backlog.shift();
    for (const listener of [...channel.listeners.keys()]) {
      try {
        listener(delivered);
      } catch {
        // One broken stream must not stop delivery to the others.
      }
    }
    return delivered;
  }

  private channel(hostId: string): HostChannel {
    let channel = this.hosts.get(hostId);
    if (!channel) {
      channel = { seq: 0, backlog: [], listeners: new Map() };
      this.hosts.set(hostId, channel);
    }
    return channel;
  }
}
