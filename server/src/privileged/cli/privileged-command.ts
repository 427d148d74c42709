// `trustplane privileged keygen|certify|sign|submit|open`: the carried-request workflow from
// the terminal. An investigator signs requests for many hosts into portable files; a
// technician submits them to each host and collects sealed results into files it cannot
// open; the investigator opens them and the SDK verifies each host's signature inside.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import type { JsonWebKey } from "node:crypto";
import { importVerificationKey, verifyEnvelopeSync, type VerificationKey } from "../../../../sdk/src/auth/index.js";
import { createClient } from "../../../../sdk/src/client/create-client.js";
import { exportX25519PrivateJwk, exportX25519PublicJwk, generateX25519KeyPair, importX25519Jwk } from "../../../../sdk/src/envelope/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { SignedEnvelope } from "../../../../sdk/src/gen/trustplane/auth/v1/auth.js";
import { AuthServiceService } from "../../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { HostKeyBinding, HostKeysServiceService, PrivilegedServiceService, SealedRequest, SealedResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { buildPrivilegedRequest, openSealedResult, sealPrivilegedRequest, signPrivilegedRequest, type PrivilegedOperation } from "../../../../sdk/src/privileged/index.js";
import { CLIENT_OPTIONS, callerKey, client, configFrom, parse, print, type Command } from "../../cli/cli-context.js";
import { writeSecretFile, readJsonSecretFile } from "../../runtime/key-file.js";
import { renderTable } from "../../cli/table.js";
import { HOST_KEY_BINDING_TYPE } from "../host-keys-server-area.js";

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
  result: string;
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const usage = (m: string) => new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", m);

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
    case "apply-config-patch": {
      const [key, value] = String(values.set ?? "").split("=");
      if (!key || value === undefined) throw usage("--set KEY=VALUE is required for apply-config-patch");
      return { applyConfigPatch: { key, value, revertOf: "" } };
    }
    default:
      throw usage(`unknown --op ${op}; use collect-host-diagnostics, query-hypervisor, stop-guest, start-guest, terminate-guest, read-guest-memory or apply-config-patch`);
  }
}

/** Host keys trusted through the CA's signature on their binding (the server only relays them). */
async function fetchHostKeys(values: Record<string, unknown>, hostIds: string[], certificate?: Uint8Array): Promise<Map<string, { signing: VerificationKey; sealing: Uint8Array }>> {
  const config = configFrom(values);
  const address = (values.server as string | undefined) ?? process.env.TRUSTPLANE_SERVER ?? config.listen;
  const keys = createClient(HostKeysServiceService, address, { key: callerKey(values, config), certificate });
  try {
    const res = await keys.getHostKeys({ hostIds });
    const ca = res.caJwks.map((j) => importVerificationKey(j));
    const out = new Map<string, { signing: VerificationKey; sealing: Uint8Array }>();
    for (const h of res.hosts) {
      const b = HostKeyBinding.decode(verifyEnvelopeSync(h.binding!, { expectedType: HOST_KEY_BINDING_TYPE, resolveKey: (id) => ca.find((k) => k.keyId === id) }).payload);
      out.set(h.hostId, { signing: importVerificationKey(b.signingJwk), sealing: b.sealingPublicKey });
    }
    return out;
  } finally {
    keys.close();
  }
}

export const privilegedCommand: Command = {
  name: "privileged",
  summary: "Privileged host operations: keygen, certify, sign (portable request files), submit (carry them), open (sealed results).",
  usage: [
    "trustplane privileged keygen --out recipient.jwk",
    "       trustplane privileged certify PRINCIPAL --public-key op.jwk --class C… [--hosts PATTERN] [--ttl S] --out op.cert   (admin)",
    "       trustplane privileged sign --host H… --op OP [--vm ID] --key op.jwk --cert op.cert --recipient recipient.jwk [--seal] --out DIR",
    "       trustplane privileged submit FILE… --key tech.jwk --cert tech.cert [--agent HOST=ADDR…] --out DIR",
    "       trustplane privileged open FILE… --recipient-key recipient.jwk",
  ].join("\n"),
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      out: { type: "string" },
      host: { type: "string", multiple: true },
      op: { type: "string" },
      vm: { type: "string" },
      cert: { type: "string" },
      recipient: { type: "string" },
      "recipient-key": { type: "string" },
      seal: { type: "boolean" },
      agent: { type: "string", multiple: true },
      class: { type: "string", multiple: true },
      hosts: { type: "string" },
      ttl: { type: "string" },
      "public-key": { type: "string" },
      timeout: { type: "string" },
      force: { type: "boolean" },
      address: { type: "string" },
      length: { type: "string" },
      set: { type: "string" },
    });
    const sub = positionals[0];
    if (sub === "keygen") {
      if (!values.out) throw usage("--out FILE is required");
      const kp = generateX25519KeyPair();
      writeSecretFile(path.resolve(values.out), JSON.stringify(exportX25519PrivateJwk(kp.privateKey), null, 2) + "\n");
      const pub = `${path.resolve(values.out)}.pub`;
      writeFileSync(pub, JSON.stringify(exportX25519PublicJwk(kp.publicKey), null, 2) + "\n");
      print(values, { privateKey: path.resolve(values.out), publicKey: pub }, () => `X25519 recipient key: ${path.resolve(values.out!)} (0600), public half ${pub}`);
      return;
    }
    if (sub === "certify") {
      const principal = positionals[1];
      if (!principal || !values["public-key"] || !values.out || !values.class?.length) throw usage(`usage: ${this.usage}`);
      const jwk = JSON.parse(readFileSync(values["public-key"], "utf8")) as JsonWebKey & { d?: string };
      const { d: _d, ...publicJwk } = jwk;
      const auth = client(AuthServiceService, values);
      try {
        const { certificate } = await auth.issueCertificate({
          requestId: `cli-cert-${principal}-${Date.now()}`,
          principal,
          publicKeyJwk: JSON.stringify(publicJwk),
          operationClasses: values.class,
          hostPattern: values.hosts ?? "*",
          ttlSeconds: Number(values.ttl ?? 3600),
        });
        writeFileSync(path.resolve(values.out), b64(SignedEnvelope.encode(certificate!).finish()) + "\n");
        print(values, { certificate: path.resolve(values.out) }, () => `certificate for ${principal} (${values.class!.join(", ")} on ${values.hosts ?? "*"}) written to ${path.resolve(values.out!)}`);
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
      if (!values.host?.length || !values.op || !values.recipient || !values.out) throw usage(`usage: ${this.usage}`);
      const { key, cert } = operatorKey();
      const recipient = importX25519Jwk(JSON.parse(readFileSync(values.recipient, "utf8"))).publicKey;
      const hostKeys = values.seal ? await fetchHostKeys(values, values.host, cert) : undefined;
      mkdirSync(values.out, { recursive: true });
      const written: string[] = [];
      for (const hostId of values.host) {
        const req = buildPrivilegedRequest({ hostId, operation: operationFrom(values.op, values.vm, values), recipientPublicKey: recipient });
        const envelope = signPrivilegedRequest(req, key, cert);
        const file: RequestFile = { kind: "trustplane.privileged.request", hostId, requestId: req.requestId, operation: values.op, notAfterMs: req.notAfterMs, envelope: b64(SignedEnvelope.encode(envelope).finish()) };
        if (hostKeys) file.sealed = b64(SealedRequest.encode(sealPrivilegedRequest(envelope, hostId, hostKeys.get(hostId)!.sealing)).finish());
        const out = path.join(values.out, `${hostId}.${req.requestId}.request.json`);
        writeFileSync(out, JSON.stringify(file, null, 2) + "\n");
        written.push(out);
      }
      print(values, written, () => `signed ${written.length} request(s), valid until ${new Date(Date.now() + 300_000).toISOString()}:\n${written.map((w) => `  ${w}`).join("\n")}`);
      return;
    }
    if (sub === "submit") {
      const files = positionals.slice(1);
      if (!files.length || !values.out) throw usage(`usage: ${this.usage}`);
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
      mkdirSync(values.out, { recursive: true });
      const rows: string[][] = [];
      for (const f of files) {
        const rf = readJson<RequestFile>(f, "trustplane.privileged.request");
        const address = agents.get(rf.hostId);
        if (!address) throw usage(`no address for host ${rf.hostId}; pass --agent ${rf.hostId}=HOST:PORT`);
        const agent = createClient(PrivilegedServiceService, address, { key, certificate: cert, targetHost: rf.hostId });
        try {
          const envelope = SignedEnvelope.decode(unb64(rf.envelope));
          const { result } = rf.sealed
            ? await agent.submit({ requestId: rf.requestId, sealed: SealedRequest.decode(unb64(rf.sealed)) })
            : await agent.submit({ requestId: rf.requestId, envelope });
          const out = path.join(values.out, `${rf.hostId}.${rf.requestId}.result.json`);
          const file: ResultFile = { kind: "trustplane.privileged.result", hostId: rf.hostId, requestId: rf.requestId, envelope: rf.envelope, result: b64(SealedResult.encode(result!).finish()) };
          writeFileSync(out, JSON.stringify(file, null, 2) + "\n");
          rows.push([rf.hostId, rf.operation, "sealed result", out]);
        } catch (e) {
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
      if (!files.length || !values["recipient-key"]) throw usage(`usage: ${this.usage}`);
      const recipient = importX25519Jwk(readJsonSecretFile<JsonWebKey>(values["recipient-key"]));
      const results = files.map((f) => readJson<ResultFile>(f, "trustplane.privileged.result"));
      const hostKeys = await fetchHostKeys(values, [...new Set(results.map((r) => r.hostId))]);
      const opened = results.map((r) =>
        openSealedResult({
          sealed: SealedResult.decode(unb64(r.result)),
          recipientPrivateKey: recipient.privateKey!,
          requestEnvelope: unb64(r.envelope),
          hostKey: hostKeys.get(r.hostId)!.signing,
          hostId: r.hostId,
          requestId: r.requestId,
        }),
      );
      print(values, opened, () => opened.map((o) => `${o.hostId} ${o.requestId}: ${o.outcome} (host signature verified)\n${JSON.stringify({ ...o, requestDigest: undefined, data: undefined }, (_k, v) => (typeof v === "bigint" ? String(v) : v), 2)}`).join("\n"));
      return;
    }
    throw usage(`unknown subcommand ${JSON.stringify(sub ?? "")}\nusage: ${this.usage}`);
  },
};

