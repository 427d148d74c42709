// `trustplane privileged keygen|certify|sign|submit|open`: the carried-request workflow from
// the terminal. An investigator signs requests for many hosts into portable files; a
// technician submits them to each host and collects sealed results into files it cannot
// open; the investigator opens them and the SDK verifies each host's signature inside. Host
// keys are trusted only through a pinned CA key (--ca, the CA id in --cert, or the CA public
// key `trustplane dev` writes to its data dir), never on the relaying server's word.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { JsonWebKey } from "node:crypto";
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { exportX25519PrivateJwk, exportX25519PublicJwk, generateX25519KeyPair, importX25519Jwk, importX25519RecipientKey } from "../../../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { SignedEnvelope } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HostKeysServiceService, PrivilegedServiceService, SealedRequest, SealedResult, type PrivilegedResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import {
  MAX_MEMORY_READ_OPTION,
  OPERATIONS_OPTION,
  buildPrivilegedRequest,
  caKeyIdOf,
  openSealedResult,
  openSealedResultStream,
  sealPrivilegedRequest,
  signPrivilegedRequest,
  trustedHostKeys,
  type CaPin,
  type PrivilegedOperation,
  type TrustedHostKeys,
} from "../../../../sdk/src/privileged/index.js";
import { CLIENT_OPTIONS, callerKey, client, configFrom, parse, print, type Command } from "../../cli/cli-context.js";
import { writeSecretFile, readJsonSecretFile } from "../../runtime/key-file.js";
import { renderTable } from "../../cli/table.js";
import { PINNED_CA_FILE } from "../host-keys-server-area.js";
import { SealedPartsWriter, readSealedParts } from "./sealed-parts-file.js";

/** A signed (and maybe sealed) request as it travels in a file. */
interface RequestFile {
  kind: "trustplane.privileged.request";
  hostId: string;
  requestId: string;
  operation: string;
  notAfterMs: number;
  envelope: string;
  sealed?: string;
}

/** A sealed result as the technician brings it back. */
interface ResultFile {
  kind: "trustplane.privileged.result";
  hostId: string;
  requestId: string;
  /** The signed request it answers (the result is bound to these exact bytes). */
  envelope: string;
  /** A one-shot sealed result, inline. */
  result?: string;
  /** A streamed result: the sealed parts file beside this one (open it with --out). */
  stream?: string;
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const usage = (m: string) => new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", m);

const OPS = ["collect-host-diagnostics", "query-hypervisor", "stop-guest", "start-guest", "terminate-guest", "read-guest-memory", "dump-guest-memory", "apply-config-patch"];

/** Each subcommand's own help: what it is for, its usage, and what it needs. */
const SUBCOMMANDS: Record<string, { summary: string; usage: string; detail: string[] }> = {
  keygen: {
    summary: "Make an X25519 recipient key pair; results sealed to the .pub half open only with the private file.",
    usage: "trustplane privileged keygen --out recipient.jwk",
    detail: ["--out FILE   private key (mode 0600); the public half goes to FILE.pub"],
  },
  certify: {
    summary: "(admin) Ask the CA for a short-lived operator certificate: classes, host pattern and per-key restrictions.",
    usage: "trustplane privileged certify PRINCIPAL --public-key op.jwk --class C… [--hosts PATTERN] [--operations OP,…] [--max-memory-read BYTES] [--ttl S] --out op.cert",
    detail: [
      "--class C             lifecycle, inspect, memory, patch or carry (repeat for several)",
      "--hosts PATTERN       host ids, * and ? globs (default *)",
      "--operations OP,…     only these operations within the classes (critical option)",
      "--max-memory-read N   at most N bytes per memory read or dump (critical option)",
    ],
  },
  sign: {
    summary: "Sign privileged requests into portable files (valid 5 minutes), optionally sealed to each host's published key.",
    usage:
      "trustplane privileged sign --host H… --op OP [--vm ID] [--address A --length N] [--format raw|elf] [--set KEY=VALUE | --revert PATCH] --key op.jwk --cert op.cert --recipient recipient.jwk.pub [--seal [--ca ca.pub.jwk.json]] --out DIR",
    detail: [`--op OP   ${OPS.join(", ")}`, "--seal    seal each request to its host's key (bound by the pinned CA), so the carrier cannot read it"],
  },
  submit: {
    summary: "Carry signed request files to their hosts and collect the sealed results (which the carrier cannot open).",
    usage: "trustplane privileged submit FILE… --key tech.jwk --cert tech.cert [--agent HOST=ADDR…] --out DIR",
    detail: ["--agent HOST=ADDR   the host's agent address (otherwise looked up on the server)", "Large results (memory dumps) are saved as a .parts file beside the result file."],
  },
  open: {
    summary: "Open sealed result files with the recipient key; each host's signature is verified against the pinned CA.",
    usage: "trustplane privileged open FILE… --key recipient.jwk [--out FILE] [--ca ca.pub.jwk.json | --cert op.cert] [--caller-key K]",
    detail: [
      "--key FILE        the X25519 recipient private key (--recipient-key is accepted too)",
      "--out FILE        where a streamed result (memory dump) or a memory read's bytes go",
      `--ca FILE         the CA public key to pin (default: ${PINNED_CA_FILE} in the data dir, written by trustplane dev)`,
      "--cert FILE       or pin the CA your own certificate names",
      "--caller-key K    signing key for the host-keys lookup (default TRUSTPLANE_KEY or the dev admin key)",
    ],
  },
};

function readJson<T>(file: string, kind: string): T {
  let v: T & { kind?: string };
  try {
    v = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw usage(`${file}: not a readable JSON file (${(e as Error).message})`);
  }
  if (v.kind !== kind) throw usage(`${file}: not a ${kind} file`);
  return v;
}

function operationFrom(op: string, vm: string | undefined, values: Record<string, unknown>): Partial<PrivilegedOperation> {
  const needVm = () => {
    if (!vm) throw usage(`--vm ID is required for ${op}`);
    return vm;
  };
  switch (op) {
    case "collect-host-diagnostics":
      return { collectHostDiagnostics: {} };
    case "query-hypervisor":
      return { queryHypervisor: { vmId: needVm() } };
    case "stop-guest":
      return { stopGuest: { vmId: needVm(), timeoutSeconds: Number(values.timeout ?? 30), force: Boolean(values.force) } };
    case "start-guest":
      return { startGuest: { vmId: needVm() } };
    case "terminate-guest":
      return { terminateGuest: { vmId: needVm() } };
    case "read-guest-memory":
      return { readGuestMemory: { vmId: needVm(), address: Number(values.address ?? 0), length: Number(values.length ?? 4096) } };
    case "dump-guest-memory":
      return { dumpGuestMemory: { vmId: needVm(), format: String(values.format ?? "raw") } };
    case "apply-config-patch": {
      if (values.revert) return { applyConfigPatch: { key: "", value: "", revertOf: String(values.revert) } };
      const set = String(values.set ?? "");
      const eq = set.indexOf("=");
      if (eq <= 0) throw usage("--set KEY=VALUE (or --revert PATCH) is required for apply-config-patch");
      return { applyConfigPatch: { key: set.slice(0, eq), value: set.slice(eq + 1), revertOf: "" } };
    }
    default:
      throw usage(`unknown --op ${op}; use ${OPS.join(", ")}`);
  }
}

/** What the host keys are checked against: --ca, the CA id in --cert, or the dev data dir's CA file. */
function caPin(values: Record<string, unknown>): CaPin {
  if (values.ca) return { caJwk: readFileSync(String(values.ca), "utf8") };
  if (values.cert) return { caKeyId: caKeyIdOf(unb64(readFileSync(String(values.cert), "utf8").trim())) };
  const file = path.join(configFrom(values).dataDir, PINNED_CA_FILE);
  if (existsSync(file)) return { caJwk: readFileSync(file, "utf8") };
  throw usage(`no CA key to check host keys against: pass --ca FILE (the CA's public key) or --cert FILE (your certificate names its CA)`);
}

/** Host keys trusted through the pinned CA's signature on their binding (the server only relays them). */
async function fetchHostKeys(values: Record<string, unknown>, hostIds: string[], caller: { key: ReturnType<typeof callerKey>; certificate?: Uint8Array }): Promise<Map<string, TrustedHostKeys>> {
  const pin = caPin(values);
  const config = configFrom(values);
  const address = (values.server as string | undefined) ?? process.env.TRUSTPLANE_SERVER ?? config.listen;
  const keys = createClient(HostKeysServiceService, address, caller);
  try {
    return trustedHostKeys(await keys.getHostKeys({ hostIds }), pin);
  } finally {
    keys.close();
  }
}

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? String(x) : x instanceof Uint8Array ? Buffer.from(x).toString("base64") : x), 2);

/** The opened result as printed: everything the host signed, data as base64. */
function shown(o: PrivilegedResult): Record<string, unknown> {
  const { requestDigest: _d, streamSha256, data, ...rest } = o;
  return { ...rest, ...(data.length ? { data: Buffer.from(data).toString("base64") } : {}), ...(streamSha256.length ? { streamSha256: Buffer.from(streamSha256).toString("hex") } : {}) };
}

export const privilegedCommand: Command = {
  name: "privileged",
  summary: "Privileged host operations: keygen, certify, sign (portable request files), submit (carry them), open (sealed results).",
  usage: Object.values(SUBCOMMANDS)
    .map((s, i) => `${i ? "       " : ""}${s.usage}`)
    .join("\n"),
  async run(argv) {
    const help = SUBCOMMANDS[argv[0] ?? ""];
    if (help && argv.some((a) => a === "--help" || a === "-h")) {
      process.stdout.write(`${help.summary}\n\nusage: ${help.usage}\n\n${help.detail.map((d) => `  ${d}`).join("\n")}\n`);
      return;
    }
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      out: { type: "string" },
      host: { type: "string", multiple: true },
      op: { type: "string" },
      vm: { type: "string" },
      cert: { type: "string" },
      ca: { type: "string" },
      recipient: { type: "string" },
      "recipient-key": { type: "string" },
      "caller-key": { type: "string" },
      seal: { type: "boolean" },
      agent: { type: "string", multiple: true },
      class: { type: "string", multiple: true },
      hosts: { type: "string" },
      operations: { type: "string" },
      "max-memory-read": { type: "string" },
      ttl: { type: "string" },
      "public-key": { type: "string" },
      timeout: { type: "string" },
      force: { type: "boolean" },
      address: { type: "string" },
      length: { type: "string" },
      format: { type: "string" },
      set: { type: "string" },
      revert: { type: "string" },
    });
    const sub = positionals[0];
    const need = (ok: unknown) => {
      if (!ok) throw usage(`usage: ${SUBCOMMANDS[sub!]!.usage}`);
    };
    if (sub === "keygen") {
      need(values.out);
      const kp = generateX25519KeyPair();
      writeSecretFile(path.resolve(values.out!), JSON.stringify(exportX25519PrivateJwk(kp.privateKey), null, 2) + "\n");
      const pub = `${path.resolve(values.out!)}.pub`;
      writeFileSync(pub, JSON.stringify(exportX25519PublicJwk(kp.publicKey), null, 2) + "\n");
      print(values, { privateKey: path.resolve(values.out!), publicKey: pub }, () => `X25519 recipient key: ${path.resolve(values.out!)} (0600), public half ${pub}`);
      return;
    }
    if (sub === "certify") {
      const principal = positionals[1];
      need(principal && values["public-key"] && values.out && values.class?.length);
      const jwk = JSON.parse(readFileSync(values["public-key"]!, "utf8")) as JsonWebKey & { d?: string };
      const { d: _d, ...publicJwk } = jwk;
      const options = [
        ...(values.operations ? [{ name: OPERATIONS_OPTION, value: values.operations.replace(/-/g, "_"), critical: true }] : []),
        ...(values["max-memory-read"] ? [{ name: MAX_MEMORY_READ_OPTION, value: values["max-memory-read"], critical: true }] : []),
      ];
      const auth = client(AuthServiceService, values);
      try {
        const { certificate } = await auth.issueCertificate({
          requestId: `cli-cert-${principal}-${Date.now()}`,
          principal,
          publicKeyJwk: JSON.stringify(publicJwk),
          operationClasses: values.class,
          hostPattern: values.hosts ?? "*",
          ttlSeconds: Number(values.ttl ?? 3600),
          options,
        });
        writeFileSync(path.resolve(values.out!), b64(SignedEnvelope.encode(certificate!).finish()) + "\n");
        const limits = options.map((o) => `${o.name}=${o.value}`).join(", ");
        print(values, { certificate: path.resolve(values.out!) }, () => `certificate for ${principal} (${values.class!.join(", ")} on ${values.hosts ?? "*"}${limits ? `; ${limits}` : ""}) written to ${path.resolve(values.out!)}`);
      } finally {
        auth.close();
      }
      return;
    }
    const operatorKey = () => {
      if (!values.cert) throw usage("--cert FILE (your CA certificate) is required");
      return { key: callerKey(values, configFrom(values)), cert: unb64(readFileSync(values.cert, "utf8").trim()) };
    };
    if (sub === "sign") {
      need(values.host?.length && values.op && values.recipient && values.out);
      const { key, cert } = operatorKey();
      const recipient = importX25519Jwk(JSON.parse(readFileSync(values.recipient!, "utf8"))).publicKey;
      const hostKeys = values.seal ? await fetchHostKeys(values, values.host!, { key, certificate: cert }) : undefined;
      mkdirSync(values.out!, { recursive: true });
      const written: string[] = [];
      for (const hostId of values.host!) {
        const req = buildPrivilegedRequest({ hostId, operation: operationFrom(values.op!, values.vm, values), recipientPublicKey: recipient });
        const envelope = signPrivilegedRequest(req, key, cert);
        const file: RequestFile = { kind: "trustplane.privileged.request", hostId, requestId: req.requestId, operation: values.op!, notAfterMs: req.notAfterMs, envelope: b64(SignedEnvelope.encode(envelope).finish()) };
        if (hostKeys) file.sealed = b64(SealedRequest.encode(sealPrivilegedRequest(envelope, hostId, hostKeys.get(hostId)!.sealing)).finish());
        const out = path.join(values.out!, `${hostId}.${req.requestId}.request.json`);
        writeFileSync(out, JSON.stringify(file, null, 2) + "\n");
        written.push(out);
      }
      print(values, written, () => `signed ${written.length} request(s), valid until ${new Date(Date.now() + 300_000).toISOString()}:\n${written.map((w) => `  ${w}`).join("\n")}`);
      return;
    }
    if (sub === "submit") {
      const files = positionals.slice(1);
      need(files.length && values.out);
      const { key, cert } = operatorKey();
      const agents = new Map((values.agent ?? []).map((a) => a.split("=") as [string, string]));
      if (agents.size < new Set(files.map((f) => readJson<RequestFile>(f, "trustplane.privileged.request").hostId)).size) {
        // Host addresses come from the server when the caller may list hosts; a carrier
        // usually may not and names them with --agent HOST=ADDR.
        const config = configFrom(values);
        const auth = createClient(AuthServiceService, (values.server as string | undefined) ?? process.env.TRUSTPLANE_SERVER ?? config.listen, { key, certificate: cert });
        try {
          for (const h of (await auth.listHosts({ pageSize: 1000 })).hosts) if (!agents.has(h.hostId)) agents.set(h.hostId, h.address);
        } catch (e) {
          throw usage(`cannot look up agent addresses (${(e as Error).message}); pass --agent HOST=ADDR for each host`);
        } finally {
          auth.close();
        }
      }
      mkdirSync(values.out!, { recursive: true });
      const rows: string[][] = [];
      for (const f of files) {
        const rf = readJson<RequestFile>(f, "trustplane.privileged.request");
        const address = agents.get(rf.hostId);
        if (!address) throw usage(`no address for host ${rf.hostId}; pass --agent ${rf.hostId}=HOST:PORT`);
        const agent = createClient(PrivilegedServiceService, address, { key, certificate: cert, targetHost: rf.hostId });
        const base = path.join(values.out!, `${rf.hostId}.${rf.requestId}`);
        const partsFile = `${base}.result.parts`;
        let writer: SealedPartsWriter | undefined;
        try {
          // Always the streamed call: the carrier need not know (and for a sealed request
          // cannot know) whether the result is one sealed message or a sealed stream.
          const request = rf.sealed ? { requestId: rf.requestId, sealed: SealedRequest.decode(unb64(rf.sealed)) } : { requestId: rf.requestId, envelope: SignedEnvelope.decode(unb64(rf.envelope)) };
          let first: SealedResult | undefined;
          let count = 0;
          for await (const part of agent.submitStream(request)) {
            count++;
            if (count === 1 && part.result) first = part.result;
            if (count === 2) {
              writer = await SealedPartsWriter.create(partsFile);
              await writer.write({ result: first });
            }
            if (writer) await writer.write(part);
          }
          await writer?.close();
          if (!first) throw new TrustplaneError("DATA_LOSS", "STREAM_INVALID", "the agent's answer does not start with a sealed result");
          const file: ResultFile = { kind: "trustplane.privileged.result", hostId: rf.hostId, requestId: rf.requestId, envelope: rf.envelope, ...(writer ? { stream: path.basename(partsFile) } : { result: b64(SealedResult.encode(first).finish()) }) };
          writeFileSync(`${base}.result.json`, JSON.stringify(file, null, 2) + "\n");
          rows.push([rf.hostId, rf.operation, writer ? "sealed result (streamed)" : "sealed result", `${base}.result.json`]);
        } catch (e) {
          if (writer) await writer.close().catch(() => undefined);
          rmSync(partsFile, { force: true });
          rows.push([rf.hostId, rf.operation, e instanceof TrustplaneError ? `refused: ${e.reason}` : `failed: ${(e as Error).message}`, "-"]);
        } finally {
          agent.close();
        }
      }
      print(values, rows, () => renderTable(["HOST", "OPERATION", "OUTCOME", "FILE"], rows));
      if (rows.some((r) => r[3] === "-")) process.exitCode = 1;
      return;
    }
    if (sub === "open") {
      const files = positionals.slice(1);
      const keyFile = values["recipient-key"] ?? values.key;
      need(files.length && keyFile);
      const recipient = importX25519Jwk(readJsonSecretFile<JsonWebKey>(keyFile!));
      if (!recipient.privateKey) throw usage(`${keyFile}: not an X25519 private key (make one with trustplane privileged keygen)`);
      const results = files.map((f) => ({ file: f, r: readJson<ResultFile>(f, "trustplane.privileged.result") }));
      if (results.filter(({ r }) => r.stream || r.result === undefined).length > 0 && (!values.out || results.length > 1)) {
        throw usage("a streamed result (memory dump) opens into a file: give exactly one result file and --out FILE");
      }
      const config = configFrom(values);
      const caller = { key: callerKey({ ...values, key: values["caller-key"] }, config), certificate: values["caller-key"] && values.cert ? unb64(readFileSync(values.cert, "utf8").trim()) : undefined };
      const hostKeys = await fetchHostKeys(values, [...new Set(results.map(({ r }) => r.hostId))], caller);
      const opened: Record<string, unknown>[] = [];
      // Imported once for every result the same key opens.
      const recipientKey = importX25519RecipientKey(recipient.privateKey);
      for (const { file, r } of results) {
        const common = { recipientPrivateKey: recipientKey, requestEnvelope: unb64(r.envelope), hostKey: hostKeys.get(r.hostId)!.signing, hostId: r.hostId, requestId: r.requestId };
        if (r.stream) {
          const out = path.resolve(values.out!);
          const s = await openSealedResultStream({ ...common, parts: readSealedParts(path.join(path.dirname(file), r.stream)), outFile: out });
          opened.push({ ...shown(s.result), streamSha256: Buffer.from(s.sha256!).toString("hex"), streamSize: s.bytes, out });
        } else {
          const o = openSealedResult({ ...common, sealed: SealedResult.decode(unb64(r.result!)) });
          if (values.out && o.data.length) writeFileSync(path.resolve(values.out), o.data, { mode: 0o600 });
          opened.push(shown(o));
        }
      }
      print(values, opened, () => opened.map((o) => `${o.hostId} ${o.requestId}: ${o.outcome} (host signature verified)${o.out ? `, ${o.streamSize} bytes to ${o.out}` : ""}\n${json(o)}`).join("\n"));
      return;
    }
    throw usage(`unknown subcommand ${JSON.stringify(sub ?? "")}; use ${Object.keys(SUBCOMMANDS).join(", ")} (each has --help)\nusage: ${this.usage}`);
  },
};
