// `trustplane keys|principal|host|audit|echo|whoami`: identity administration over signed
// calls to AuthService, plus offline audit verification straight from storage.
import { formatHead, parseHead, readCheckpoint } from "../../runtime/storage/audit-checkpoint.js";
import { AUDIT_CHECKPOINT_FILE } from "../../processes/server-process.js";
import type { JsonWebKey } from "node:crypto";
import path from "node:path";
import { exportPrivateJwk, generateSigningKey, importVerificationKey, type Algorithm } from "../../../../sdk/src/auth/index.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { AuthServiceService, PolicyEffect } from "../../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { writeSecretFile } from "../../runtime/key-file.js";
import { Storage } from "../../runtime/storage/storage.js";
import { CLIENT_OPTIONS, COMMON_OPTIONS, client, configFrom, parse, print, requirePositional, type Command } from "../cli-context.js";
import { renderTable } from "../table.js";
import { readFileSync } from "node:fs";

const ALGORITHMS = new Set<Algorithm>(["Ed25519", "ES256", "HS256"]);

export const keysCommand: Command = {
  name: "keys",
  summary: "Create a signing key (private JWK written with mode 0600) and print its key id and public JWK.",
  usage: "trustplane keys create [--alg Ed25519|ES256|HS256] --out FILE",
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...COMMON_OPTIONS, alg: { type: "string" }, out: { type: "string" }, json: { type: "boolean" } });
    if (positionals[0] !== "create") throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(positionals[0] ?? "")}\nusage: ${this.usage}`);
    const alg = (values.alg ?? "Ed25519") as Algorithm;
    if (!ALGORITHMS.has(alg)) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `--alg must be one of ${[...ALGORITHMS].join(", ")}`, "alg");
    if (!values.out) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `--out FILE is required (the private key is never printed)\nusage: ${this.usage}`, "out");
    const key = generateSigningKey(alg);
    writeSecretFile(path.resolve(values.out), JSON.stringify(exportPrivateJwk(key), null, 2) + "\n");
    const publicJwk = alg === "HS256" ? undefined : key.publicJwk;
    print(values, { keyId: key.keyId, algorithm: alg, file: path.resolve(values.out), publicJwk }, () =>
      [
        `created ${alg} key ${key.keyId}`,
        `  private JWK: ${path.resolve(values.out!)} (mode 0600)`,
        publicJwk ? `  public JWK:  ${JSON.stringify(publicJwk)}` : "  HS256 is a shared secret: register it with `trustplane principal add-key NAME --jwk FILE`",
      ].join("\n"),
    );
  },
};

export const principalCommand: Command = {
  name: "principal",
  summary: "Manage principals: create, list, show, add a key, allow methods.",
  usage: "trustplane principal create NAME [--role R]… [--kind user|service] [--allow METHOD]… | list | get NAME | add-key NAME --jwk FILE",
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      role: { type: "string", multiple: true },
      kind: { type: "string" },
      allow: { type: "string", multiple: true },
      jwk: { type: "string" },
    });
    const auth = client(AuthServiceService, values);
    try {
      switch (positionals[0]) {
        case "create": {
          const name = requirePositional(this, positionals, 1, "principal NAME");
          const allow = values.allow ?? [];
          const res = await auth.createPrincipal({
            requestId: `cli-principal-${name}-${Date.now()}`,
            name,
            roles: values.role ?? [],
            kind: values.kind ?? "user",
            policy: allow.length ? { rules: [{ methods: allow, effect: PolicyEffect.POLICY_EFFECT_ALLOW }] } : undefined,
          });
          print(values, res.principal, () => `created principal ${res.principal!.name} (${res.principal!.kind})`);
          break;
        }
        case "list": {
          const res = await auth.listPrincipals({ pageSize: 1000 });
          print(values, res.principals, () =>
            renderTable(
              ["NAME", "KIND", "ROLES", "KEYS", "CREATED"],
              res.principals.map((p) => [p.name, p.kind, p.roles.join(",") || "-", p.keys.filter((k) => !k.revoked).length, new Date(p.createdAtMs).toISOString()]),
            ),
          );
          break;
        }
        case "get": {
          const res = await auth.getPrincipal({ name: requirePositional(this, positionals, 1, "principal NAME") });
          print(values, res.principal, () => JSON.stringify(res.principal, (_k, v) => (v instanceof Map ? Object.fromEntries(v) : v), 2));
          break;
        }
        case "add-key": {
          const name = requirePositional(this, positionals, 1, "principal NAME");
          if (!values.jwk) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--jwk FILE is required", "jwk");
          const jwk = JSON.parse(readFileSync(values.jwk, "utf8")) as JsonWebKey & { d?: string };
          // Only the public half travels, unless the key is a shared HMAC secret.
          const { d: _d, ...publicJwk } = jwk;
          const key = importVerificationKey(jwk.kty === "oct" ? jwk : publicJwk);
          const res = await auth.addKey({ requestId: `cli-key-${key.keyId}`, principal: name, jwk: JSON.stringify(key.jwk) });
          print(values, res.key, () => `added ${res.key!.algorithm} key ${res.key!.keyId} to ${name}`);
          break;
        }
        default:
          throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(positionals[0] ?? "")}\nusage: ${this.usage}`);
      }
    } finally {
      auth.close();
    }
  },
};

export const hostCommand: Command = {
  name: "host",
  summary: "Mint one-time join tokens for agents and list joined hosts.",
  usage: "trustplane host join-token [--host-id ID] [--ttl SECONDS] | list",
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...CLIENT_OPTIONS, "host-id": { type: "string" }, ttl: { type: "string" } });
    const auth = client(AuthServiceService, values);
    try {
      if (positionals[0] === "join-token") {
        const ttl = values.ttl ? Number(values.ttl) : 3600;
        if (!Number.isInteger(ttl) || ttl <= 0) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--ttl must be a positive number of seconds", "ttl");
        const res = await auth.createJoinToken({ requestId: `cli-join-${Date.now()}`, hostId: values["host-id"] ?? "", ttlSeconds: ttl });
        print(values, res, () => `${res.joinToken}\n(valid until ${new Date(res.expiresAtMs).toISOString()}, single use)`);
      } else if (positionals[0] === "list") {
        const res = await auth.listHosts({ pageSize: 1000 });
        print(values, res.hosts, () =>
          renderTable(
            ["HOST", "ADDRESS", "KEY", "JOINED", "LAST SEEN"],
            res.hosts.map((h) => [h.hostId, h.address, h.signingKeyId.slice(0, 16) + "…", new Date(h.joinedAtMs).toISOString(), new Date(h.lastSeenMs).toISOString()]),
          ),
        );
      } else {
        throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(positionals[0] ?? "")}\nusage: ${this.usage}`);
      }
    } finally {
      auth.close();
    }
  },
};

export const auditCommand: Command = {
  name: "audit",
  summary: "Verify the hash-chained audit log (offline, straight from storage), print its head, or list recent records.",
  usage:
    "trustplane audit verify [--expect-head SEQ:HASH] [--database-url URL] [--data-dir DIR] | head [--database-url URL] [--data-dir DIR] | list [--after SEQ] [--limit N]\n" +
    "  verify re-walks the chain and checks it still reaches the head the server recorded in DATA_DIR/audit.head.json\n" +
    "  (a deleted tail leaves a valid but shorter chain) and any --expect-head an operator kept elsewhere.",
  async run(argv) {
    const { values, positionals } = parse(this, argv, { ...CLIENT_OPTIONS, "database-url": { type: "string" }, after: { type: "string" }, limit: { type: "string" }, "expect-head": { type: "string" } });
    if (positionals[0] === "verify" || positionals[0] === "head") {
      const config = configFrom(values, { databaseUrl: values["database-url"] });
      const expected = values["expect-head"] ? parseHead(values["expect-head"]) : undefined;
      const storage = await Storage.open(config.databaseUrl ? { url: config.databaseUrl } : { sqlitePath: path.join(config.dataDir, "trustplane.db") });
      try {
        if (positionals[0] === "head") {
          const head = await storage.audit.head();
          print(values, head ? { seq: head.seq, hash: head.hash.toString("hex"), head: formatHead(head) } : {}, () => (head ? formatHead(head) : "the audit log is empty"));
          return;
        }
        const checkpoint = readCheckpoint(path.join(config.dataDir, AUDIT_CHECKPOINT_FILE));
        const heads = [...(checkpoint ? [{ what: "the server's checkpoint", head: checkpoint }] : []), ...(expected ? [{ what: "--expect-head", head: expected }] : [])];
        let v = await storage.audit.verify();
        for (const { what, head } of heads) {
          if (!v.ok) break;
          const problem = await storage.audit.missing(head);
          if (problem) v = { ok: false, records: v.records, brokenAtSeq: head.seq, problem: `${problem} (${what} ${formatHead(head).slice(0, 24)}…)` };
        }
        const against = heads.map((h) => `${h.what} at record ${h.head.seq}`).join(" and ");
        print(values, v, () =>
          v.ok ? `audit log intact: ${v.records} records, hash chain verified${against ? `, reaches ${against}` : " (no recorded head to compare the end with)"}` : `AUDIT LOG BROKEN at record ${v.brokenAtSeq}: ${v.problem}`,
        );
        if (!v.ok) process.exitCode = 3;
      } finally {
        await storage.close();
      }
    } else if (positionals[0] === "list") {
      const auth = client(AuthServiceService, values);
      try {
        const res = await auth.listAuditRecords({ afterSeq: Number(values.after ?? 0), pageSize: Number(values.limit ?? 50) });
        print(values, res.records.map((r) => ({ ...r, prevHash: Buffer.from(r.prevHash).toString("hex"), hash: Buffer.from(r.hash).toString("hex") })), () =>
          renderTable(
            ["SEQ", "TIME", "PRINCIPAL", "ACTION", "TARGET", "OUTCOME"],
            res.records.map((r) => [r.seq, new Date(r.timeMs).toISOString(), r.principal, r.action, r.target, r.outcome]),
          ),
        );
      } finally {
        auth.close();
      }
    } else {
      throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(positionals[0] ?? "")}\nusage: ${this.usage}`);
    }
  },
};

export const echoCommand: Command = {
  name: "echo",
  summary: "Signed round trip to the server: prints the message back with who the server says you are.",
  usage: "trustplane echo MESSAGE [--server host:port] [--key FILE]",
  async run(argv) {
    const { values, positionals } = parse(this, argv, CLIENT_OPTIONS);
    const auth = client(AuthServiceService, values);
    try {
      const res = await auth.echo({ message: positionals.join(" ") });
      print(values, res, () => `${res.message}\n  verified caller: ${res.principal} (key ${res.keyId})\n  request id:      ${res.requestId}`);
    } finally {
      auth.close();
    }
  },
};

export const whoamiCommand: Command = {
  name: "whoami",
  summary: "Who the server believes the caller is (principal, key id, roles).",
  usage: "trustplane whoami [--server host:port] [--key FILE]",
  async run(argv) {
    const { values } = parse(this, argv, CLIENT_OPTIONS);
    const auth = client(AuthServiceService, values);
    try {
      const res = await auth.whoAmI({});
      print(values, res, () => `${res.principal}  key ${res.keyId}  roles ${res.roles.join(",") || "-"}`);
    } finally {
      auth.close();
    }
  },
};
