// Entry point of an untrusted deploy worker process (deploy validation, seed 001): speaks
// the framed protobuf protocol on stdin/stdout, holds no credentials, writes only into its
// scratch directory (TRUSTPLANE_SCRATCH, /scratch under the sandbox).
import { ServerToWorker, WorkerToServer } from "../../../../sdk/src/gen/trustplane/deploy/v1/worker.js";
import { encodeFrame, FrameReader } from "./frame-codec.js";
import { runValidation } from "./worker-session.js";

const scratch = process.env.TRUSTPLANE_SCRATCH ?? "/scratch";

function send(m: WorkerToServer): void {
  process.stdout.write(encodeFrame(WorkerToServer.encode(WorkerToServer.fromPartial(m)).finish()));
}

let queue = Promise.resolve();
const reader = new FrameReader(
  (payload) => {
    const msg = ServerToWorker.decode(payload);
    if (msg.shutdown) process.exit(0);
    if (msg.validate) {
      const req = msg.validate;
      queue = queue.then(async () => send(await runValidation(req, scratch, send)));
    }
  },
  () => process.exit(3),
);
process.stdin.on("data", (c: Buffer) => reader.push(c));
process.stdin.on("end", () => process.exit(0));
send({ ready: { protocolVersion: 1, pid: process.pid } });
