// pino JSON logging for every Trustplane process. Secrets never reach a log: known secret
// fields are redacted by path, and callers log ids (request id, key id), never values.
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger };

/** Field names that may hold secrets anywhere in a log object; pino censors them. */
const SECRET_FIELDS = [
  "token",
  "accessToken",
  "access_token",
  "joinToken",
  "join_token",
  "secret",
  "password",
  "privateKey",
  "private_key",
  "d",
  "k",
  "dek",
  "otk",
  "authorization",
  "signature",
  "jwk",
];

export function redactPaths(): string[] {
  const paths: string[] = [];
  for (const f of SECRET_FIELDS) paths.push(f, `*.${f}`, `*.*.${f}`);
  return paths;
}

export interface LoggerConfig {
  level?: string;
  name?: string;
  /** Where to write; defaults to stdout. Tests pass a stream to inspect the output. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(config: LoggerConfig = {}): Logger {
  const options: LoggerOptions = {
    level: config.level ?? process.env.TRUSTPLANE_LOG_LEVEL ?? "info",
    name: config.name ?? "trustplane",
    redact: { paths: redactPaths(), censor: "[redacted]" },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return config.destination ? pino(options, config.destination as DestinationStream) : pino(options);
}
