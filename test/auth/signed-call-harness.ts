// Test harness for signed calls: a real grpc-js server on 127.0.0.1 with the generated
// AuthService and a test streaming service bound through bindService + CallVerifier, plus
// helpers to send hand-made (tampered) calls with a raw grpc-js client.
import * as grpc from "@grpc/grpc-js";
import { PassThrough } from "node:stream";
import {
  CERTIFICATE_METADATA,
  KEY_ID_METADATA,
  SIGNATURE_METADATA,
  STATEMENT_METADATA,
  signCall,
  type SignCallInput,
} from "../../sdk/src/auth/call-statement.js";
import { importVerificationKey, type VerificationKey } from "../../sdk/src/auth/verification-key.js";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/signing-key.js";
import { EchoRequest, EchoResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { AuthServiceService, CreatePrincipalResponse } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { CallVerifier } from "../../server/src/runtime/auth/call-verifier.js";
import type { ResolvedKey } from "../../server/src/runtime/auth/key-resolver.js";
import { MemoryNonceStore } from "../../server/src/runtime/auth/memory-nonce-store.js";
import { RulePolicyEngine, type PrincipalPolicy } from "../../server/src/runtime/auth/policy-engine.js";
import { MemoryIdempotencyStore } from "../../server/src/runtime/auth/idempotency-store.js";
import { bindService, messageAuthenticated, type DeniedCall } from "../../server/src/runtime/auth/service-binder.js";
import { createLogger } from "../../server/src/runtime/logger.js";

const echoCodec = {
  requestSerialize: (v: EchoRequest) => Buffer.from(EchoRequest.encode(v).finish()),
  requestDeserialize: (b: Buffer) => EchoRequest.decode(b),
  responseSerialize: (v: EchoResponse) => Buffer.from(EchoResponse.encode(v).finish()),
  responseDeserialize: (b: Buffer) => EchoResponse.decode(b),
};

/** A streaming test service (area protos are still being written), in grpc-js's generic form. */
export const StreamTestService = {
  upload: { path: "/trustplane.streamtest.v1.StreamTestService/Upload", requestStream: true as const, responseStream: false as const, ...echoCodec },
  repeat: { path: "/trustplane.streamtest.v1.StreamTestService/Repeat", requestStream: false as const, responseStream: true as const, ...echoCodec },
  chat: { path: "/trustplane.streamtest.v1.StreamTestService/Chat", requestStream: true as const, responseStream: true as const, ...echoCodec },
} satisfies grpc.ServiceDefinition;

/** A service of an area that has not landed: every method must answer UNIMPLEMENTED. */
export const NotYetVmService = {
  createVm: { path: "/trustplane.vm.v1.VmService/CreateVm", requestStream: false as const, responseStream: false as const, ...echoCodec },
} satisfies grpc.ServiceDefinition;

export const ECHO = AuthServiceService.echo.path;
export const WHOAMI = AuthServiceService.whoAmI.path;

export interface HarnessOptions {
  hostId?: string;
  now?: () => number;
}

export class Harness {
  readonly server = new grpc.Server();
  readonly ca = generateSigningKey();
  readonly keys = new Map<string, ResolvedKey>();
  readonly policies = new Map<string, PrincipalPolicy>();
  readonly nonces = new MemoryNonceStore();
  readonly denied: DeniedCall[] = [];
  readonly commits: string[][] = [];
  readonly logLines: string[] = [];
  createPrincipalRuns = 0;
  address = "";
  private readonly clients: grpc.Client[] = [];

  constructor(private readonly opts: HarnessOptions = {}) {}

  /** Registers a key for a principal with the given policy rules. */
  register(principal: string, key: SigningKey, policy: Partial<PrincipalPolicy> = {}, revoked = false): VerificationKey {
    const vk = importVerificationKey(key.publicJwk);
    this.keys.set(vk.keyId, { principal, key: vk, revoked });
    this.policies.set(principal, { roles: policy.roles ?? [], rules: policy.rules ?? [{ methods: ["/trustplane.*"], effect: "allow" }] });
    return vk;
  }

  async start(): Promise<this> {
    const logStream = new PassThrough();
    logStream.on("data", (chunk: Buffer) => this.logLines.push(...chunk.toString("utf8").split("\n").filter(Boolean)));
    const verifier = new CallVerifier({
      keys: { resolve: async (id) => this.keys.get(id) },
      caKeys: () => [importVerificationKey(this.ca.publicJwk)],
      nonces: this.nonces,
      policy: new RulePolicyEngine(async (p) => this.policies.get(p)),
      hostId: this.opts.hostId,
      now: this.opts.now,
    });
    const runtime = {
      verifier,
      logger: createLogger({ destination: logStream, level: "debug" }),
      idempotency: new MemoryIdempotencyStore(),
      onDenied: (e: DeniedCall) => void this.denied.push(e),
    };
    bindService(this.server, AuthServiceService, {
      echo: async (req, ctx) => {
        if (req.message === "boom") throw new Error("secret internal detail");
        return { message: req.message, principal: ctx.caller.principal, keyId: ctx.caller.keyId, requestId: ctx.requestId };
      },
      whoAmI: async (_req, ctx) => ({ principal: ctx.caller.principal, keyId: ctx.caller.keyId, roles: ctx.caller.roles }),
      createPrincipal: async (req) => {
        this.createPrincipalRuns++;
        return CreatePrincipalResponse.fromPartial({ principal: { name: req.name, roles: req.roles, createdAtMs: this.createPrincipalRuns } });
      },
    }, runtime);
    bindService(this.server, StreamTestService, {
      upload: async (stream) => {
        const seen: string[] = [];
        for await (const m of stream) seen.push(m.message);
        // Commits only after the loop: a tampered stream must never get here.
        this.commits.push(seen);
        return { message: seen.join(","), principal: "", keyId: "", requestId: "" };
      },
      repeat: async function* (req) {
        for (let i = 0; i < 3; i++) yield { message: `${req.message}#${i}`, principal: "", keyId: "", requestId: "" };
      },
      // Declared message-authenticated for the test only: it echoes, and trusts nothing it reads.
      chat: messageAuthenticated(async function* (stream, ctx) {
        for await (const m of stream) yield { message: m.message.toUpperCase(), principal: ctx.caller.principal, keyId: "", requestId: "" };
      }),
    }, runtime);
    bindService(this.server, NotYetVmService, {}, runtime);
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  /** A raw client: sends exactly the bytes and metadata it is given. */
  rawUnary(path: string, bytes: Uint8Array, metadata: grpc.Metadata): Promise<{ err?: grpc.ServiceError; res?: Buffer }> {
    const client = new grpc.Client(this.address, grpc.credentials.createInsecure());
    this.clients.push(client);
    return new Promise((resolve) =>
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), metadata, {}, (err, res) =>
        resolve(err ? { err } : { res }),
      ),
    );
  }

  rawClientStream(path: string, messages: Uint8Array[], metadata: grpc.Metadata): Promise<{ err?: grpc.ServiceError; res?: Buffer }> {
    const client = new grpc.Client(this.address, grpc.credentials.createInsecure());
    this.clients.push(client);
    return new Promise((resolve) => {
      const call = client.makeClientStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b, metadata, {}, (err, res) =>
        resolve(err ? { err } : { res }),
      );
      for (const m of messages) call.write(Buffer.from(m));
      call.end();
    });
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    this.server.forceShutdown();
  }
}

export function signedMetadata(input: SignCallInput): grpc.Metadata {
  const s = signCall(input);
  const md = new grpc.Metadata();
  md.set(STATEMENT_METADATA, Buffer.from(s.statement));
  md.set(SIGNATURE_METADATA, Buffer.from(s.signature));
  md.set(KEY_ID_METADATA, s.keyId);
  if (s.certificate) md.set(CERTIFICATE_METADATA, Buffer.from(s.certificate));
  return md;
}

export function reasonOf(err: grpc.ServiceError | undefined): string | undefined {
  const v = err?.metadata.get("tp-reason")[0];
  return typeof v === "string" ? v : undefined;
}
