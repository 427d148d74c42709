// The untrusted job runner — the guest program of seed 003's job VM (a sandbox VM from the VM
// area), one VM per job. It speaks only the framed protocol (runner-frames.ts) over the VM's
// host channel (a unix socket the agent's job bridge serves): makes an ephemeral X25519 key,
// asks for the DEK (which arrives HPKE-sealed to that key), reads its own input ciphertext,
// decrypts as it streams into the WebAssembly worker (memory cap, wall clock), encrypts the
// output under the DEK with a fresh stream key, sends it back, and wipes keys and plaintext.
// Bundled by the bridge (esbuild) into one file the VM sees read-only.
import { createHash } from "node:crypto";
import { connect } from "node:net";
import { Worker } from "node:worker_threads";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { decryptStream } from "../../../../sdk/src/envelope/decrypt-stream.js";
import { encryptStream } from "../../../../sdk/src/envelope/encrypt-stream.js";
import { open } from "../../../../sdk/src/envelope/hpke.js";
import { generateX25519KeyPair } from "../../../../sdk/src/envelope/x25519-keys.js";
import { dekReleaseInfo } from "../../../../sdk/src/job/job-bindings.js";
import {
  controlFrame,
  encodeFrame,
  FRAME_CODE,
  FRAME_CONTROL,
  FRAME_DATA,
  FRAME_RESULT,
  parseControl,
  readFrames,
  writeFrame,
  type Frame,
  type HostMessage,
  type RunnerMessage,
} from "./runner-frames.js";
import { wasmWorkerSource } from "./wasm-worker.js";

/** Plaintext segments handed to the module's worker before the first is acknowledged. */
const IN_FLIGHT = 3;

class JobFailure extends Error {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super(detail);
  }
}

// The host channel, bound read-only into the VM by the sandbox driver.
const channel = connect(process.argv[2] ?? "/run/trustplane/job.sock");
channel.on("error", () => process.exit(3));
const frames = readFrames(channel);
const send = (m: RunnerMessage) => writeFrame(channel, controlFrame(m));

async function next(): Promise<Frame> {
  const r = await frames.next();
  if (r.done) throw new JobFailure("HOST_CLOSED", "the job service closed the channel");
  return r.value;
}

async function nextControl(): Promise<HostMessage> {
  return parseControl<HostMessage>(await next());
}

async function* inputCiphertext(): AsyncGenerator<Uint8Array> {
  for (;;) {
    const f = await next();
    if (f.kind === FRAME_DATA) yield f.payload;
    else if (f.kind === FRAME_CONTROL) {
      const m = parseControl<HostMessage>(f);
      if (m.t === "dataEnd") return;
      throw new JobFailure("PROTOCOL", `unexpected ${m.t} while reading input`);
    } else throw new JobFailure("PROTOCOL", `unexpected frame kind ${f.kind} while reading input`);
  }
}

/** Runs the module over the plaintext stream; returns its output bytes. */
async function runModule(code: Uint8Array, memoryBytes: number, wallClockMs: number, plaintext: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const maxPages = Math.max(1, Math.floor(memoryBytes / 65536));
  const worker = new Worker(wasmWorkerSource(), {
    eval: true,
    workerData: { code, maxPages },
    // JS heap of the worker is small: the module's data lives in its capped wasm memory.
    resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
    stdout: true,
    stderr: true,
  });
  let waiting: { resolve: (m: any) => void; reject: (e: Error) => void } | undefined;
  // Chunk acknowledgements, in the order the chunks were posted.
  const ackWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  let failure: JobFailure | undefined;
  const failWith = (f: JobFailure) => {
    failure ??= f;
    waiting?.reject(failure);
    waiting = undefined;
    for (const w of ackWaiters.splice(0)) w.reject(failure);
  };
  const nextAck = (): Promise<void> => {
    const p = new Promise<void>((resolve, reject) => (failure ? reject(failure) : ackWaiters.push({ resolve, reject })));
    p.catch(() => undefined);
    return p;
  };
  const timer = setTimeout(() => {
    failWith(new JobFailure("WALL_CLOCK_EXCEEDED", `the module ran longer than its wall-clock limit of ${wallClockMs} ms and was terminated`));
    void worker.terminate();
  }, wallClockMs);
  worker.on("message", (m: { t: string; reason?: string; detail?: string }) => {
    if (m.t === "error") failWith(new JobFailure(m.reason!, m.detail!));
    else if (m.t === "ack") ackWaiters.shift()?.resolve();
    else {
      const w = waiting;
      waiting = undefined;
      w?.resolve(m);
    }
  });
  worker.on("error", (e: Error & { code?: string }) => {
    failWith(
      e.code === "ERR_WORKER_OUT_OF_MEMORY"
        ? new JobFailure("MEMORY_LIMIT_EXCEEDED", "the module's worker ran out of its memory cap")
        : new JobFailure("MODULE_TRAPPED", `${e.name}: ${e.message}`),
    );
  });
  worker.on("exit", () => failWith(new JobFailure("MODULE_EXITED", "the module's worker exited")));
  const reply = <T>(): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (failure) return reject(failure);
      waiting = { resolve, reject };
    });
  try {
    await reply<{ t: "ready" }>();
    let bytes = 0;
    let reported = 0;
    // Several chunks in flight: the next segment decrypts here while the module runs on the
    // last one in its thread. Acks come back in order; at most IN_FLIGHT wait unacknowledged.
    const acks: Promise<unknown>[] = [];
    for await (const piece of plaintext) {
      if (failure) throw failure;
      const length = piece.length;
      acks.push(nextAck());
      if (piece.byteOffset === 0 && piece.byteLength === piece.buffer.byteLength && piece.buffer instanceof ArrayBuffer) {
        // The piece owns its memory: move it (the worker wipes it after copying it in).
        worker.postMessage({ t: "chunk", data: piece }, [piece.buffer]);
      } else {
        worker.postMessage({ t: "chunk", data: piece });
        piece.fill(0);
      }
      if (acks.length >= IN_FLIGHT) await acks.shift();
      bytes += length;
      if (bytes - reported >= 16 * 1024 * 1024) {
        reported = bytes;
        await send({ t: "progress", state: "RUNNING", bytes });
      }
    }
    await Promise.all(acks);
    const result = reply<{ t: "result"; data: Uint8Array }>();
    worker.postMessage({ t: "finish" });
    return (await result).data;
  } finally {
    clearTimeout(timer);
    worker.removeAllListeners("exit");
    await worker.terminate();
  }
}

async function main(): Promise<void> {
  const start = await nextControl();
  if (start.t !== "start") throw new JobFailure("PROTOCOL", "expected start");
  const codeFrame = await next();
  if (codeFrame.kind !== FRAME_CODE) throw new JobFailure("PROTOCOL", "expected the module");
  const code = new Uint8Array(codeFrame.payload);
  if (createHash("sha256").update(code).digest("hex") !== start.codeSha256) {
    throw new JobFailure("CODE_DIGEST_MISMATCH", "the module does not hash to the job's code digest");
  }

  // The DEK: requested with a fresh ephemeral key; only this process can open the release.
  const eph = generateX25519KeyPair();
  await send({ t: "keyRequest", publicKey: Buffer.from(eph.publicKey).toString("base64") });
  const answer = await nextControl();
  if (answer.t === "keyDenied") {
    eph.privateKey.fill(0);
    throw new JobFailure("KEY_DENIED", `the client refused to release the data key: ${answer.reason}`);
  }
  if (answer.t !== "keyRelease") throw new JobFailure("PROTOCOL", "expected the key release");
  let dek: Uint8Array;
  try {
    dek = open(eph.privateKey, Buffer.from(answer.enc, "base64"), Buffer.from(answer.sealedDek, "base64"), {
      info: dekReleaseInfo(start.jobId, Buffer.from(start.otkDigest, "hex"), Buffer.from(start.codeSha256, "hex")),
    });
  } finally {
    eph.privateKey.fill(0);
  }

  try {
    await send({ t: "read", data: start.data });
    const begin = await nextControl();
    if (begin.t === "dataRefused") throw new JobFailure("DATA_REFUSED", begin.reason);
    if (begin.t !== "dataBegin") throw new JobFailure("PROTOCOL", "expected the input");
    const plaintext = decryptStream(inputCiphertext(), {
      dek: (dekId) => {
        if (dekId !== start.dekId) throw new JobFailure("DEK_ID_MISMATCH", `the input was encrypted under DEK ${JSON.stringify(dekId)}, not the job's ${JSON.stringify(start.dekId)}`);
        return dek;
      },
    });
    const output = await runModule(code, start.memoryBytes, start.wallClockMs, plaintext);
    await send({ t: "progress", state: "STORING", bytes: output.length });
    // Fresh salt and nonce prefix per envelope: a fresh stream key under the same DEK.
    let resultBytes = 0;
    for await (const piece of encryptStream([output], { dek, dekId: start.dekId })) {
      resultBytes += piece.length;
      await writeFrame(channel, encodeFrame(FRAME_RESULT, piece));
    }
    output.fill(0);
    await send({ t: "done", resultBytes, maxRssKiB: process.resourceUsage().maxRSS });
  } finally {
    dek.fill(0);
  }
}

main().then(
  () => channel.end(() => process.exit(0)),
  async (e: unknown) => {
    const reason = e instanceof JobFailure ? e.reason : e instanceof TrustplaneError ? e.reason : "RUNNER_ERROR";
    const detail = e instanceof Error ? e.message : String(e);
    await send({ t: "failed", reason, detail }).catch(() => undefined);
    channel.end(() => process.exit(1));
  },
);
