// `trustplane sa create|grant|revoke|list|define-service` and `trustplane token inspect <jwt>`:
// service-account administration over signed TokenService calls, and decoding a short-term
// token with its signature checked against the authority's JWKS (fetched over gRPC).
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from "jose";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { TokenServiceService } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";
import { CLIENT_OPTIONS, client, parse, print, requirePositional, type Command } from "../../cli/cli-context.js";
import { renderTable } from "../../cli/table.js";

function usageError(command: Command, sub: string | undefined): TrustplaneError {
  return new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(sub ?? "")}\nusage: ${command.usage}`);
}

const requestId = (what: string) => `cli-${what}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

export const serviceAccountCommand: Command = {
  name: "sa",
  summary: "Service accounts VMs run as: create, grant/revoke act-as, list, define a service's scopes.",
  usage:
    "trustplane sa create EMAIL [--display-name NAME] [--scope S…] | grant EMAIL PRINCIPAL | revoke EMAIL PRINCIPAL | list | define-service NAME --audience AUD --scope S…",
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...CLIENT_OPTIONS,
      "display-name": { type: "string" },
      audience: { type: "string" },
      scope: { type: "string", multiple: true },
    });
    const tokens = client(TokenServiceService, values);
    try {
      switch (positionals[0]) {
        case "create": {
          const email = requirePositional(this, positionals, 1, "service account EMAIL");
          // --scope limits what VMs may be granted with the account (none: any declared scope).
          const res = await tokens.createServiceAccount({ requestId: requestId("sa-create"), email, displayName: values["display-name"] ?? "", allowedScopes: values.scope ?? [] });
          print(values, res.account, () => `created service account ${res.account!.email}`);
          break;
        }
        case "grant":
        case "revoke": {
          const email = requirePositional(this, positionals, 1, "service account EMAIL");
          const principal = requirePositional(this, positionals, 2, "PRINCIPAL");
          const res =
            positionals[0] === "grant"
              ? await tokens.grantActAs({ requestId: requestId("sa-grant"), email, principal })
              : await tokens.revokeActAs({ requestId: requestId("sa-revoke"), email, principal });
          print(values, res.account, () => `${email}: act-as ${res.account!.actAs.join(", ") || "(nobody)"}`);
          break;
        }
        case "list": {
          const res = await tokens.listServiceAccounts({ pageSize: 1000 });
          print(values, res.accounts, () =>
            renderTable(
              ["EMAIL", "DISPLAY NAME", "ACT AS", "CREATED"],
              res.accounts.map((a) => [a.email, a.displayName, a.actAs.join(",") || "-", new Date(a.createdAtMs).toISOString()]),
            ),
          );
          break;
        }
        case "define-service": {
          const name = requirePositional(this, positionals, 1, "service NAME");
          if (!values.audience) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `--audience is required\nusage: ${this.usage}`, "audience");
          const res = await tokens.defineService({ requestId: requestId("svc"), service: { service: name, audience: values.audience, scopes: values.scope ?? [] } });
          print(values, res.service, () => `service ${res.service!.service}: audience ${res.service!.audience}, scopes ${res.service!.scopes.join(" ")}`);
          break;
        }
        default:
          throw usageError(this, positionals[0]);
      }
    } finally {
      tokens.close();
    }
  },
};

function show(v: unknown): string {
  if (typeof v === "number" && v > 1_000_000_000 && v < 10_000_000_000) return `${v} (${new Date(v * 1000).toISOString()})`;
  return typeof v === "string" ? v : JSON.stringify(v);
}

export const tokenCommand: Command = {
  name: "token",
  summary: "Inspect a short-term token: decode its claims and verify its signature against the server's JWKS.",
  usage: "trustplane token inspect JWT",
  async run(argv) {
    const { values, positionals } = parse(this, argv, CLIENT_OPTIONS);
    if (positionals[0] !== "inspect") throw usageError(this, positionals[0]);
    const jwt = requirePositional(this, positionals, 1, "JWT");
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(jwt) as Record<string, unknown>;
      claims = decodeJwt(jwt) as Record<string, unknown>;
    } catch (e) {
      throw new TrustplaneError("INVALID_ARGUMENT", "TOKEN_MALFORMED", `not a JWT: ${(e as Error).message}`, "jwt");
    }
    const tokens = client(TokenServiceService, values);
    let jwks;
    try {
      jwks = await tokens.getJwks({});
    } finally {
      tokens.close();
    }
    let verdict = "valid";
    try {
      // Signature, algorithm, issuer and lifetime; the audience is shown, not judged.
      await jwtVerify(jwt, createLocalJWKSet(JSON.parse(jwks.jwksJson) as JSONWebKeySet), { algorithms: ["EdDSA"], issuer: jwks.issuer });
    } catch (e) {
      verdict = `INVALID: ${(e as { code?: string }).code ?? "ERR"} ${(e as Error).message}`;
      process.exitCode = 1;
    }
    print(values, { header, claims, verified: verdict === "valid", verdict, jwksUrl: jwks.jwksUrl }, () =>
      [
        renderTable(
          ["FIELD", "VALUE"],
          [...Object.entries(header).map(([k, v]) => [`header.${k}`, show(v)]), ...Object.entries(claims).map(([k, v]) => [k, show(v)])],
        ),
        "",
        `signature: ${verdict} (keys from ${jwks.jwksUrl})`,
      ].join("\n"),
    );
  },
};
