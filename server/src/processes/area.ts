// How an area plugs into the server and agent processes: it receives the shared runtime
// (storage, keys, logger, a binder that puts its services behind the call verifier) and
// returns what to stop at shutdown. Process files stay wiring; areas stay behaviour.
import type * as grpc from "@grpc/grpc-js";
import type { SigningKey, VerificationKey } from "../../../sdk/src/auth/index.js";
import type { Handlers, MethodDef } from "../runtime/auth/service-binder.js";
import type { Config } from "../runtime/config.js";
import type { Logger } from "../runtime/logger.js";
import type { BlobStore } from "../runtime/storage/blob-store.js";
import type { Storage } from "../runtime/storage/storage.js";

export type Bind = <S extends Record<string, MethodDef>>(service: S, handlers: Partial<Handlers<S>>) => void;

export interface Running {
  /** Agent areas: runs before the agent stops serving (its gRPC server still answers). */
  drain?(): Promise<void>;
  stop(): Promise<void>;
}

export interface ServerAreaContext {
  config: Config;
  logger: Logger;
  storage: Storage;
  blobs: BlobStore;
  /** The CA key (certifies hosts and operators) and the server's own certified service key. */
  ca: SigningKey;
  serviceKey: SigningKey;
  serviceCertificate: Uint8Array;
  bind: Bind;
  /** Address the server listens on, known once bound (for areas that call back in). */
  address(): string;
}

export interface ServerArea {
  name: string;
  start(ctx: ServerAreaContext): Promise<Running | void>;
}

export interface AgentAreaContext {
  config: Config;
  logger: Logger;
  hostId: string;
  /** Host signing key (certified by the CA at join) and its certificate envelope bytes. */
  signingKey: SigningKey;
  hostCertificate: Uint8Array;
  /** Host X25519 sealing key pair (raw 32-byte keys). */
  sealing: { publicKey: Uint8Array; privateKey: Uint8Array };
  caKeys: VerificationKey[];
  serverAddress: string;
  serverCredentials: grpc.ChannelCredentials;
  /** Directory for this agent's state (0700). */
  stateDir: string;
  bind: Bind;
  /** Sets the log level of the whole agent process (every logger it made, not one child). */
  setLogLevel(level: string): void;
}

export interface AgentArea {
  name: string;
  start(ctx: AgentAreaContext): Promise<Running | void>;
}
