// What every CLI command shares: flag parsing with clear errors, config loading, the caller's
// key and a signed client for a service. Commands stay small and read like the help text.
import type { JsonWebKey } from "node:crypto";
import { parseArgs, type ParseArgsConfig } from "node:util";
import path from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { importSigningKey, type SigningKey } from "../../../sdk/src/auth/index.js";
import { createClient, type SignedClient } from "../../../sdk/src/client/create-client.js";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { loadConfig, type Config } from "../runtime/config.js";
import { readJsonSecretFile } from "../runtime/key-file.js";

export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<void>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

export const COMMON_OPTIONS = {
  config: { type: "string" },
  "data-dir": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies Options;

export const CLIENT_OPTIONS = {
  ...COMMON_OPTIONS,
  server: { type: "string" },
  key: { type: "string" },
  json: { type: "boolean" },
} satisfies Options;

export function parse<O extends Options>(command: Command, argv: string[], options: O) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `${(e as Error).message}\nusage: ${command.usage}`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`${command.summary}\n\nusage: ${command.usage}\n`);
    process.exit(0);
  }
  return parsed;
}

export function configFrom(values: Record<string, unknown>, extra: Partial<Record<keyof Config, unknown>> = {}): Config {
  return loadConfig({
    file: values.config as string | undefined,
    flags: { dataDir: values["data-dir"], logLevel: values["log-level"], ...extra },
  });
}

export function callerKey(values: Record<string, unknown>, config: Config): SigningKey {
  const file = (values.key as string | undefined) ?? process.env.TRUSTPLANE_KEY ?? path.join(config.dataDir, "admin.jwk.json");
  return importSigningKey(readJsonSecretFile<JsonWebKey>(file));
}

export function client<S extends grpc.ServiceDefinition>(service: S, values: Record<string, unknown>): SignedClient<S> {
  const config = configFrom(values);
  const address = (values.server as string | undefined) ?? process.env.TRUSTPLANE_SERVER ?? config.listen;
  return createClient(service, address, { key: callerKey(values, config) });
}

export function requirePositional(command: Command, positionals: string[], index: number, what: string): string {
  const v = positionals[index];
  if (v === undefined || v === "") throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `missing ${what}\nusage: ${command.usage}`);
  return v;
}

export function print(values: Record<string, unknown>, json: unknown, human: () => string): void {
  process.stdout.write((values.json ? JSON.stringify(json, null, 2) : human()) + "\n");
}
