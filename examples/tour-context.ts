// What every example flow receives from the demo tour (or from its own command line when run
// alone): where `trustplane dev` listens, the dev admin key, and a place for scratch files.
import type { JsonWebKey } from "node:crypto";
import path from "node:path";
import { readFileSync } from "node:fs";
import { importSigningKey, type SigningKey } from "../sdk/src/auth/index.js";

export interface TourContext {
  server: string;
  agent: string;
  dataDir: string;
  admin: SigningKey;
  /** Prints one line of what the flow did or proved. */
  say(line: string): void;
}

/** Context for running one example by itself against an already running `trustplane dev`. */
export function standaloneContext(): TourContext {
  const dataDir = path.resolve(process.env.TRUSTPLANE_DATA_DIR ?? "./.trustplane");
  return {
    server: process.env.TRUSTPLANE_SERVER ?? "127.0.0.1:7443",
    agent: process.env.TRUSTPLANE_AGENT ?? "127.0.0.1:7444",
    dataDir,
    admin: importSigningKey(JSON.parse(readFileSync(path.join(dataDir, "admin.jwk.json"), "utf8")) as JsonWebKey),
    say: (line) => process.stdout.write(`  ${line}\n`),
  };
}

export interface ExampleFlow {
  name: string;
  title: string;
  run(ctx: TourContext): Promise<void>;
}
