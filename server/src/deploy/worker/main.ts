// Entry point of an untrusted deploy worker process (deploy validation, seed 001): speaks
// the framed protobuf protocol on stdin/stdout, holds no credentials, writes only into its
// scratch directory (TRUSTPLANE_SCRATCH, /scratch under the sandbox).
import { ServerToWorker, WorkerToServer, type ValidateArchive } from "../../../../sdk/src/gen/trustplane/deploy/v1/worker.js";
import { TrustplaneError } from "../../../../sdk/src/errors.js";
import { encodeFrame, FrameReader } from "./frame-codec.js";
import { runValidation } from "./worker-session.js";

const scratch = process.env.TRUSTPLANE_SCRATCH ?? "/scratch";

function send(m: WorkerToServer): void {
  process.stdout.write(encodeFrame(WorkerToServer.encode(WorkerToServer.fromPartial(m)).finish()));
}

let nextResourceId = 1;
const pendingResources = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

/** The resource provider as a worker sees it: a request frame out, the matching answer back. */
function resourceFor(req: ValidateArchive) {
  return (providerId: string) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextResourceId++;
      pendingResources.set(id, { resolve, reject });
      send({ resource: { id, providerId, account: req.account, application: req.application, component: req.component } });
    });
}

let queue = Promise.resolve();
const reader = new FrameReader(
  (payload) => {
    const msg = ServerToWorker.decode(payload);
    if (msg.shutdown) process.exit(0);
    if (msg.resource) {
      const p = pendingResources.get(msg.resource.id);
      pendingResources.delete(msg.resource.id);
      if (!p) return;
      if (msg.resource.errorReason) p.reject(new TrustplaneError("PERMISSION_DENIED", "RESOURCE_REFUSED", `the resource provider refused: ${msg.resource.errorReason}`));
      else {
        try {
          p.resolve(JSON.parse(msg.resource.json));
        } catch {
          p.reject(new TrustplaneError("INTERNAL", "RESOURCE_INVALID", "the resource provider's answer is not JSON"));
        }
      }
    }
    if (msg.validate) {
      const req = msg.validate;
      queue = queue.then(async () => send(await runValidation(req, scratch, send, { resource: resourceFor(req) })));
    }
  },
  () => process.exit(3),
);
process.stdin.on("data", (c: Buffer) => reader.push(c));
process.stdin.on("end", () => process.exit(0));
send({ ready: { protocolVersion: 1, pid: process.pid } });
