// `trustplane job encrypt|upload|run|result` (seed 003 from the command line): encrypt a file
// under a local DEK into the envelope format, upload the ciphertext, run a WebAssembly job on
// it through a proven session with the local key holder, and fetch and open a stored result.
// Progress bars for encryption, upload, run and download. The client's DEK, OTK ledger and
// pinned CA keys live in a client directory of its own (0700, files 0600), never in the
// server's data directory: the server side must never hold what opens the client's data.
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import { decryptStream } from "../../../sdk/src/envelope/decrypt-stream.js";
import { StorageServiceService } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import { AuthServiceService } from "../../../sdk/src/gen/trustplane/auth/v1/service.js";
import { downloadObject, encryptToFile, KeyHolder, openSession, pinnedCaKeys, runJob, uploadFile } from "../../../sdk/src/job/index.js";
import { compileWat } from "../../../scripts/build-wasm-jobs.js";
import { callerKey, CLIENT_OPTIONS, client, configFrom, parse, print, requirePositional, type Command } from "../cli/cli-context.js";
import { ProgressBar } from "../cli/progress-bar.js";

const OPTIONS = {
  ...CLIENT_OPTIONS,
  "client-dir": { type: "string" },
  "dek-file": { type: "string" },
  ledger: { type: "string" },
  "ca-file": { type: "string" },
  direct: { type: "string" },
  tenant: { type: "string" },
  name: { type: "string" },
  data: { type: "string" },
  inline: { type: "string" },
  returned: { type: "boolean" },
  out: { type: "string" },
  "memory-mib": { type: "string" },
  "timeout-s": { type: "string" },
} as const;

interface DekFile {
  dekId: string;
  dek: string;
}

/** --client-dir, else TRUSTPLANE_CLIENT_DIR, else ~/.trustplane-client; created 0700, refused if others can read it. */
export function clientDir(values: Record<string, unknown>): string {
  const dir = path.resolve((values["client-dir"] as string | undefined) ?? process.env.TRUSTPLANE_CLIENT_DIR ?? path.join(os.homedir(), ".trustplane-client"));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new TrustplaneError("FAILED_PRECONDITION", "CLIENT_DIR_INSECURE", `client directory ${dir} is accessible to others (mode ${mode.toString(8)}); it holds your DEK: chmod 700 ${dir}`);
  }
  return dir;
}

/** The CA keys host attestations are checked against: --ca-file, else pinned in the client dir on first use. */
async function caKeys(values: Record<string, unknown>): Promise<string[]> {
  const file = (values["ca-file"] as string | undefined) ?? path.join(clientDir(values), "ca.json");
  return pinnedCaKeys(file, async () => {
    const auth = client(AuthServiceService, values);
    try {
      const keys = (await auth.getCaKeys({})).caJwks;
      process.stderr.write(`pinned the server's CA keys in ${file} (first use); job VM attestations are checked against them from now on\n`);
      return keys;
    } finally {
      auth.close();
    }
  });
}

/** Loads the DEK file, creating a fresh DEK (0600) when it does not exist and `create` is set. */
function loadDek(values: Record<string, unknown>, create: boolean): { dekId: string; dek: Uint8Array } {
  const file = (values["dek-file"] as string | undefined) ?? path.join(clientDir(values), "dek.json");
  if (!existsSync(file)) {
    if (!create) throw new TrustplaneError("FAILED_PRECONDITION", "DEK_FILE_MISSING", `no DEK file at ${file}; run "trustplane job encrypt" first or pass --dek-file`);
    const d: DekFile = { dekId: `dek-${randomBytes(6).toString("hex")}`, dek: randomBytes(32).toString("base64") };
    writeFileSync(file, JSON.stringify(d), { mode: 0o600, flag: "wx" });
    process.stderr.write(`created a new DEK ${d.dekId} in ${file} (keep it: nothing else can open your data)\n`);
  }
  const d = JSON.parse(readFileSync(file, "utf8")) as DekFile;
  return { dekId: d.dekId, dek: new Uint8Array(Buffer.from(d.dek, "base64")) };
}

function serverAddress(values: Record<string, unknown>): string {
  return (values.server as string | undefined) ?? process.env.TRUSTPLANE_SERVER ?? configFrom(values).listen;
}

function objectArg(v: string): { tenant: string; name: string } {
  const i = v.indexOf("/");
  if (i <= 0) throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `expected tenant/name, got ${JSON.stringify(v)}`);
  return { tenant: v.slice(0, i), name: v.slice(i + 1) };
}

async function loadModule(file: string): Promise<Uint8Array> {
  const bytes = readFileSync(file);
  return file.endsWith(".wat") ? compileWat(bytes.toString("utf8"), path.basename(file)) : new Uint8Array(bytes);
}

export const jobCommand: Command = {
  name: "job",
  summary: "secure jobs: encrypt and upload data, run WebAssembly on it in a job VM, open results",
  usage: [
    "trustplane job encrypt <plaintext-file> <out.tpev> [--dek-file F]",
    "       trustplane job upload <file.tpev> --tenant T [--name N]",
    "       trustplane job run <module.wasm|.wat> (--data tenant/name | --direct file.tpev) [--returned] [--out F] [--memory-mib N] [--timeout-s N] [--ledger F] [--ca-file F]",
    "       trustplane job result <tenant/name> [--out F]",
    "  The DEK, OTK ledger and pinned CA keys live in --client-dir (default ~/.trustplane-client, mode 0700).",
    "  --direct streams the envelope file straight to the job VM (never stored); --inline is the same.",
  ].join("\n"),
  async run(argv) {
    const { values, positionals } = parse(this, argv, OPTIONS);
    const sub = requirePositional(this, positionals, 0, "a subcommand (encrypt, upload, run, result)");
    if (sub === "encrypt") {
      const input = requirePositional(this, positionals, 1, "the plaintext file");
      const output = requirePositional(this, positionals, 2, "the output envelope file");
      const key = loadDek(values, true);
      const total = statSync(input).size;
      const bar = new ProgressBar("encrypt", total);
      let last = 0;
      const size = await encryptToFile(input, output, key, (p) => bar.update((last = p.bytes), total), total);
      bar.done(last);
      print(values, { file: output, size, dekId: key.dekId }, () => `${output}: ${size} bytes of envelope ciphertext under DEK ${key.dekId}`);
    } else if (sub === "upload") {
      const file = requirePositional(this, positionals, 1, "the envelope file");
      const tenant = values.tenant ?? (() => { throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "--tenant is required"); })();
      const storage = client(StorageServiceService, values);
      try {
        const size = statSync(file).size;
        const bar = new ProgressBar("upload", size);
        const ref = await uploadFile(storage, file, size, { tenant, name: values.name, onProgress: (p) => bar.update(p.bytes, p.total) });
        bar.done(size);
        print(values, ref, () => `uploaded ${ref.tenant}/${ref.name}  ${ref.size} bytes  sha256 ${ref.digest}`);
      } finally {
        storage.close();
      }
    } else if (sub === "run") {
      const moduleFile = requirePositional(this, positionals, 1, "the module (.wasm or .wat)");
      const code = await loadModule(moduleFile);
      const key = loadDek(values, false);
      const keyHolder = await KeyHolder.open({ ledgerPath: values.ledger ?? path.join(clientDir(values), "otk-ledger.jsonl"), caKeys: await caKeys(values) });
      keyHolder.addDek(key.dekId, key.dek);
      const config = configFrom(values);
      const session = await openSession(serverAddress(values), callerKey(values, config), { keyHolder });
      try {
        const direct = values.direct ?? values.inline;
        const data = values.data
          ? { stored: objectArg(values.data), dekId: key.dekId }
          : direct
            ? { streamed: { envelopeFile: direct }, dekId: key.dekId }
            : (() => {
                throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", "give --data tenant/name or --direct file.tpev");
              })();
        const run = new ProgressBar("run", 100, process.stderr, "percent");
        const download = new ProgressBar("download");
        let downloading = false;
        const { job, output } = await runJob(session, code, data, {
          resultMode: values.returned ? "returned" : "stored",
          limits: { memoryBytes: values["memory-mib"] ? Number(values["memory-mib"]) * 1024 * 1024 : 0, wallClockMs: values["timeout-s"] ? Number(values["timeout-s"]) * 1000 : 0 },
          onProgress: (p) => {
            if ("state" in p) {
              if (p.state === "JOB_STATE_SUCCEEDED") run.done(100, "succeeded");
              else run.update(Math.round(p.progress * 100), 100, p.state.replace("JOB_STATE_", "").toLowerCase());
            } else if (p.phase === "download") {
              downloading = true;
              download.update(p.bytes, p.total);
            }
          },
        });
        if (downloading) download.done(job.result?.size ?? 0);
        if (values.out) writeFileSync(values.out, output, { mode: 0o600 });
        else if (!values.json) process.stdout.write(Buffer.from(output));
        output.fill(0);
        if (values.json || values.out) print(values, { job: job.jobId, result: job.result ?? null, out: values.out ?? null }, () => `job ${job.jobId} succeeded${job.result ? `; encrypted result at ${job.result.tenant}/${job.result.name}` : ""}; output written to ${values.out}`);
      } finally {
        session.close();
        await keyHolder.close();
      }
    } else if (sub === "result") {
      const ref = objectArg(requirePositional(this, positionals, 1, "the result object (tenant/name)"));
      const key = loadDek(values, false);
      const storage = client(StorageServiceService, values);
      try {
        const bar = new ProgressBar("download");
        let bytes = 0;
        const plain = decryptStream(downloadObject({ storage }, ref, (p) => bar.update((bytes = p.bytes), p.total)), { dek: key.dek });
        await pipeline(Readable.from(plain), values.out ? createWriteStream(values.out, { mode: 0o600 }) : process.stdout);
        bar.done(bytes);
      } finally {
        storage.close();
      }
    } else {
      throw new TrustplaneError("INVALID_ARGUMENT", "CLI_USAGE", `unknown subcommand ${JSON.stringify(sub)}\nusage: ${this.usage}`);
    }
  },
};
