// Private keys on disk: JWK files written atomically with mode 0600 (temp file, fsync,
// rename) and refused when group- or world-readable, as ssh refuses loose private keys.
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { TrustplaneError } from "../../../sdk/src/errors.js";

/** Writes `content` to `file` atomically with mode 0600, creating the directory (0700). */
export function writeSecretFile(file: string, content: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", 0o600);
    writeSync(fd, content);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
    const dirFd = openSync(path.dirname(file), "r");
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Reads a secret file, refusing one that others could read. */
export function readSecretFile(file: string): string {
  if (!existsSync(file)) {
    throw new TrustplaneError("NOT_FOUND", "KEY_FILE_MISSING", `key file ${file} does not exist; create one with \`trustplane keys create --out ${file}\``, "key");
  }
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new TrustplaneError(
      "FAILED_PRECONDITION",
      "KEY_FILE_PERMISSIONS",
      `key file ${file} has mode ${mode.toString(8)}; private keys must not be readable by others: chmod 600 ${file}`,
      "key",
    );
  }
  return readFileSync(file, "utf8");
}

export function readJsonSecretFile<T>(file: string): T {
  const text = readSecretFile(file);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new TrustplaneError("INVALID_ARGUMENT", "KEY_FILE_INVALID", `key file ${file} is not valid JSON`, "key");
  }
}
