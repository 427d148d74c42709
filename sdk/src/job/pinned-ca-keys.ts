// The CA keys a key holder checks job VM attestations against (seed 003: the DEK goes only to a
// key a certified host attested). They are pinned in a client-side file: read from it when it
// exists, otherwise fetched once (trust on first use, like an SSH known_hosts entry) and
// written 0600. A key request can never bring its own CA: the file is consulted, not the wire.
import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, rename } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError } from "../errors.js";

/** Reads the pinned CA JWKs, or fetches and pins them when the file does not exist yet. */
export async function pinnedCaKeys(file: string, fetchOnFirstUse?: () => Promise<string[]>): Promise<string[]> {
  if (existsSync(file)) {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as { caJwks?: unknown };
    if (!Array.isArray(parsed.caJwks) || parsed.caJwks.length === 0 || !parsed.caJwks.every((k) => typeof k === "string")) {
      throw new TrustplaneError("FAILED_PRECONDITION", "CA_PIN_INVALID", `${file} does not hold {"caJwks": [...]}; fix or delete it to pin again`);
    }
    return parsed.caJwks as string[];
  }
  if (!fetchOnFirstUse) throw new TrustplaneError("FAILED_PRECONDITION", "CA_NOT_PINNED", `no pinned CA keys at ${file}; write the CA's public JWKs there ({"caJwks": [...]})`);
  const caJwks = await fetchOnFirstUse();
  if (caJwks.length === 0) throw new TrustplaneError("FAILED_PRECONDITION", "CA_NOT_PINNED", "the server named no CA keys to pin");
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const h = await open(tmp, "wx", 0o600);
  try {
    await h.writeFile(JSON.stringify({ caJwks, pinnedAtMs: Date.now() }, null, 2) + "\n");
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(tmp, file);
  return caJwks;
}
