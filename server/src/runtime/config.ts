// Configuration for every Trustplane process: defaults, then a JSON file, then environment
// (TRUSTPLANE_*), then command-line flags — later sources win. Validated once at the edge
// so a bad value is reported with the setting's name and where it came from.
import { readFileSync } from "node:fs";
import path from "node:path";
import { TrustplaneError } from "../../../sdk/src/errors.js";

export interface TlsConfig {
  certFile: string;
  keyFile: string;
  /** When set, clients must present a certificate signed by this CA (mTLS). */
  clientCaFile?: string;
}

export interface Config {
  /** Directory for the SQLite file, blobs, keys and agent state. */
  dataDir: string;
  /** host:port the server listens on. */
  listen: string;
  /** host:port the agent listens on. */
  agentListen: string;
  /** PostgreSQL URL; when absent the embedded SQLite file under dataDir is used. */
  databaseUrl?: string;
  /** Allowed clock skew for signed calls, in seconds. */
  skewSeconds: number;
  logLevel: string;
  /** How long graceful shutdown waits for calls in flight before cancelling them. */
  drainSeconds: number;
  tls?: TlsConfig;
  /** Agent: the server to join, its join token and the host id it asks for. */
  serverAddress?: string;
  joinToken?: string;
  hostId?: string;
  /** Agent (VM area): the region this host registers in, for the scheduler's RegionFilter. */
  region?: string;
  /** Agent: expected server TLS CA (PEM file) when the server uses TLS. */
  serverCaFile?: string;
  /** Token area: host:port of the HTTP listener serving /.well-known/jwks.json. */
  jwksListen: string;
  /** Token area: `iss` of every token; the same on every replica. */
  tokenIssuer: string;
  /** Token area: short-term token lifetime in seconds (at most 3600). */
  tokenTtlSeconds: number;
  /** Token area: how long one signing key signs before a fresh one takes over. */
  tokenKeyRotationHours: number;
  /** Agent (VM area): stop this host's running VMs when the agent shuts down; by default they outlive it. */
  stopVmsOnShutdown: boolean;
}

export const DEFAULT_CONFIG: Config = {
  dataDir: "./.trustplane",
  listen: "127.0.0.1:7443",
  agentListen: "127.0.0.1:7444",
  skewSeconds: 300,
  logLevel: "info",
  drainSeconds: 10,
  jwksListen: "127.0.0.1:0",
  tokenIssuer: "https://tokens.trustplane.local",
  tokenTtlSeconds: 3600,
  tokenKeyRotationHours: 24,
  stopVmsOnShutdown: false,
};

type Source = "file" | "environment" | "flag";
type RawConfig = Record<string, unknown>;

const ENV_NAMES: Record<string, keyof Config> = {
  TRUSTPLANE_DATA_DIR: "dataDir",
  TRUSTPLANE_LISTEN: "listen",
  TRUSTPLANE_AGENT_LISTEN: "agentListen",
  TRUSTPLANE_DATABASE_URL: "databaseUrl",
  TRUSTPLANE_SKEW_SECONDS: "skewSeconds",
  TRUSTPLANE_LOG_LEVEL: "logLevel",
  TRUSTPLANE_DRAIN_SECONDS: "drainSeconds",
  TRUSTPLANE_SERVER: "serverAddress",
  TRUSTPLANE_JOIN_TOKEN: "joinToken",
  TRUSTPLANE_HOST_ID: "hostId",
  TRUSTPLANE_REGION: "region",
  TRUSTPLANE_SERVER_CA: "serverCaFile",
  TRUSTPLANE_JWKS_LISTEN: "jwksListen",
  TRUSTPLANE_TOKEN_ISSUER: "tokenIssuer",
  TRUSTPLANE_TOKEN_TTL_SECONDS: "tokenTtlSeconds",
  TRUSTPLANE_TOKEN_KEY_ROTATION_HOURS: "tokenKeyRotationHours",
  TRUSTPLANE_STOP_VMS_ON_SHUTDOWN: "stopVmsOnShutdown",
};

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

function bad(setting: string, source: Source, message: string): TrustplaneError {
  return new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", `config ${setting} (from ${source}): ${message}`, setting);
}

function hostPort(setting: string, source: Source, value: unknown): string {
  if (typeof value !== "string" || !/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
    throw bad(setting, source, `expected host:port, got ${JSON.stringify(value)}`);
  }
  const port = Number(value.slice(value.lastIndexOf(":") + 1));
  if (port > 65535) throw bad(setting, source, `port ${port} is out of range`);
  return value;
}

function positiveNumber(setting: string, source: Source, value: unknown): number {
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isFinite(n) || n <= 0) {
    throw bad(setting, source, `expected a positive number, got ${JSON.stringify(value)}`);
  }
  return n;
}

function bool(setting: string, source: Source, value: unknown): boolean {
  if (typeof value === "boolean") return value;
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  throw bad(setting, source, `expected true or false, got ${JSON.stringify(value)}`);
}

function str(setting: string, source: Source, value: unknown): string {
  if (typeof value !== "string" || value === "") throw bad(setting, source, "expected a non-empty string");
  return value;
}

/** Applies one source's raw values onto a config, validating each known setting. */
function apply(into: Config, raw: RawConfig, source: Source): Config {
  const out: Config = { ...into };
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    switch (key) {
      case "listen":
      case "agentListen":
      case "jwksListen":
        out[key] = hostPort(key, source, value);
        break;
      case "tokenTtlSeconds": {
        const n = positiveNumber(key, source, value);
        if (n > 3600 || !Number.isInteger(n)) throw bad(key, source, "short-term tokens live at most 3600 whole seconds");
        out.tokenTtlSeconds = n;
        break;
      }
      case "tokenKeyRotationHours":
        out.tokenKeyRotationHours = positiveNumber(key, source, value);
        break;
      case "tokenIssuer": {
        const iss = str(key, source, value);
        if (!/^https?:\/\/[^\s]+$/.test(iss)) throw bad(key, source, "expected an http(s) URL");
        out.tokenIssuer = iss;
        break;
      }
      case "stopVmsOnShutdown":
        out.stopVmsOnShutdown = bool(key, source, value);
        break;
      case "skewSeconds":
      case "drainSeconds":
        out[key] = positiveNumber(key, source, value);
        break;
      case "logLevel": {
        const level = str(key, source, value);
        if (!LOG_LEVELS.has(level)) throw bad(key, source, `unknown level ${JSON.stringify(level)}; use one of ${[...LOG_LEVELS].join(", ")}`);
        out.logLevel = level;
        break;
      }
      case "databaseUrl": {
        const url = str(key, source, value);
        if (!/^postgres(ql)?:\/\//.test(url)) throw bad(key, source, "expected a postgres:// or postgresql:// URL");
        out.databaseUrl = url;
        break;
      }
      case "serverAddress":
        out.serverAddress = hostPort(key, source, value);
        break;
      case "region": {
        const region = str(key, source, value);
        if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(region)) throw bad(key, source, "use 1-63 lowercase letters, digits or dashes, e.g. eu-west-1");
        out.region = region;
        break;
      }
      case "dataDir":
      case "joinToken":
      case "hostId":
      case "serverCaFile":
        out[key] = str(key, source, value);
        break;
      case "tls": {
        const t = value as Partial<TlsConfig>;
        if (typeof t !== "object" || t === null) throw bad(key, source, "expected an object with certFile and keyFile");
        out.tls = {
          certFile: str("tls.certFile", source, t.certFile),
          keyFile: str("tls.keyFile", source, t.keyFile),
          ...(t.clientCaFile !== undefined ? { clientCaFile: str("tls.clientCaFile", source, t.clientCaFile) } : {}),
        };
        break;
      }
      default:
        throw bad(key, source, "unknown setting");
    }
  }
  if (out.hostId !== undefined && !/^[a-z0-9][a-z0-9.-]{0,62}$/.test(out.hostId)) {
    throw bad("hostId", source, "use 1-63 lowercase letters, digits, dots or dashes");
  }
  return out;
}

export interface LoadConfigInput {
  /** Path of a JSON config file (also TRUSTPLANE_CONFIG). */
  file?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Partial<Record<keyof Config, unknown>>;
  defaults?: Partial<Config>;
}

export function loadConfig(input: LoadConfigInput = {}): Config {
  const env = input.env ?? process.env;
  let config: Config = { ...DEFAULT_CONFIG, ...input.defaults };
  const file = input.file ?? env.TRUSTPLANE_CONFIG;
  if (file) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw new TrustplaneError("INVALID_ARGUMENT", "CONFIG_INVALID", `config file ${file}: ${(e as Error).message}`, "config");
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("config", "file", `${file} must hold a JSON object`);
    config = apply(config, raw as RawConfig, "file");
  }
  const fromEnv: RawConfig = {};
  for (const [name, key] of Object.entries(ENV_NAMES)) if (env[name] !== undefined && env[name] !== "") fromEnv[key] = env[name];
  if (env.TRUSTPLANE_TLS_CERT || env.TRUSTPLANE_TLS_KEY) {
    fromEnv.tls = { certFile: env.TRUSTPLANE_TLS_CERT, keyFile: env.TRUSTPLANE_TLS_KEY, clientCaFile: env.TRUSTPLANE_TLS_CLIENT_CA };
  }
  config = apply(config, fromEnv, "environment");
  config = apply(config, input.flags ?? {}, "flag");
  return { ...config, dataDir: path.resolve(config.dataDir) };
}
