// StorageService handlers (seed 003, hosted storage): streamed, tenant-scoped put/get/stat/
// delete of objects over the content-addressed blob store. It stores whatever bytes the
// client sends — envelope ciphertext made by the SDK — and never holds a key to open them.
import { randomUUID } from "node:crypto";
import { TrustplaneError } from "../../../sdk/src/errors.js";
import type { ObjectRef, PutObjectHeader, StorageServiceService } from "../../../sdk/src/gen/trustplane/job/v1/storage.js";
import type { Handlers } from "../runtime/auth/service-binder.js";
import type { BlobStore } from "../runtime/storage/blob-store.js";
import type { Storage } from "../runtime/storage/storage.js";
import type { ObjectRecord, ObjectRepository } from "./object-repository.js";
import { checkObjectName, checkTenantAccess } from "./tenant-access.js";

/** Largest object accepted (the declared size must not exceed it). */
export const MAX_OBJECT_BYTES = 64 * 1024 ** 3;
/** Bytes per GetObject chunk: well under gRPC's 4 MiB message limit. */
const GET_CHUNK = 1024 * 1024;

export function objectRef(o: ObjectRecord): ObjectRef {
  return { tenant: o.tenant, name: o.name, digest: o.digest, size: o.size };
}

export function notFound(tenant: string, name: string): TrustplaneError {
  return new TrustplaneError("NOT_FOUND", "OBJECT_NOT_FOUND", `no object ${JSON.stringify(name)} in tenant ${JSON.stringify(tenant)}; upload it first`, "name");
}

function alreadyExists(tenant: string, name: string): TrustplaneError {
  return new TrustplaneError("ALREADY_EXISTS", "OBJECT_EXISTS", `object ${JSON.stringify(name)} already exists in tenant ${JSON.stringify(tenant)}; delete it first or choose another name`, "name");
}

export function createStorageHandlers(deps: { storage: Storage; blobs: BlobStore; objects: ObjectRepository }): Handlers<typeof StorageServiceService> {
  const { storage, blobs, objects } = deps;
  return {
    async putObject(stream, ctx) {
      const iterator = stream[Symbol.asyncIterator]();
      const first = await iterator.next();
      const header: PutObjectHeader | undefined = first.done ? undefined : first.value.header;
      if (!header) throw new TrustplaneError("INVALID_ARGUMENT", "PUT_HEADER_REQUIRED", "the first PutObject message must be the header (tenant, name, size)", "header");
      checkTenantAccess(ctx.caller, header.tenant);
      const name = header.name === "" ? `obj_${randomUUID()}` : header.name;
      checkObjectName(name);
      if (await objects.get(header.tenant, name)) throw alreadyExists(header.tenant, name);
      const declared = Number(header.size);
      if (!Number.isSafeInteger(declared) || declared < 0 || declared > MAX_OBJECT_BYTES) {
        throw new TrustplaneError("INVALID_ARGUMENT", "OBJECT_SIZE_INVALID", `size: declare the object's size in bytes (0..${MAX_OBJECT_BYTES})`, "size");
      }
      const chunks = (async function* () {
        for (let n = await iterator.next(); !n.done; n = await iterator.next()) {
          if (n.value.header) throw new TrustplaneError("INVALID_ARGUMENT", "PUT_HEADER_REPEATED", "only the first PutObject message may be a header", "header");
          if (n.value.chunk) yield n.value.chunk;
        }
      })();
      const info = await blobs.put(chunks, { maxBytes: declared });
      if (info.size !== declared) {
        if (!(await objects.referenced(info.digest))) await blobs.delete(info.digest);
        throw new TrustplaneError("INVALID_ARGUMENT", "OBJECT_SIZE_MISMATCH", `the upload had ${info.size} bytes but the header declared ${declared}; resend with the right size`, "size");
      }
      const record: ObjectRecord = { tenant: header.tenant, name, digest: info.digest, size: info.size, createdBy: ctx.caller.principal, createdAtMs: Date.now() };
      if (!(await objects.insert(record))) throw alreadyExists(header.tenant, name);
      await storage.audit.append({ principal: ctx.caller.principal, action: "job.object.put", target: `${header.tenant}/${name}`, outcome: "ok", requestId: ctx.requestId, detail: { digest: info.digest, size: info.size } });
      return { object: objectRef(record) };
    },

    async *getObject(req, ctx) {
      checkTenantAccess(ctx.caller, req.tenant);
      const o = await objects.get(req.tenant, req.name);
      if (!o) throw notFound(req.tenant, req.name);
      yield { object: objectRef(o) };
      let pending: Buffer = Buffer.alloc(0);
      for await (const piece of blobs.get(o.digest) as AsyncIterable<Buffer>) {
        pending = pending.length === 0 ? piece : Buffer.concat([pending, piece]);
        while (pending.length >= GET_CHUNK) {
          yield { chunk: pending.subarray(0, GET_CHUNK) };
          pending = pending.subarray(GET_CHUNK);
        }
      }
      if (pending.length > 0) yield { chunk: pending };
    },

    async statObject(req, ctx) {
      checkTenantAccess(ctx.caller, req.tenant);
      const o = await objects.get(req.tenant, req.name);
      if (!o) throw notFound(req.tenant, req.name);
      return { object: objectRef(o) };
    },

    async deleteObject(req, ctx) {
      checkTenantAccess(ctx.caller, req.tenant);
      const o = await objects.delete(req.tenant, req.name);
      if (!o) throw notFound(req.tenant, req.name);
      if (!(await objects.referenced(o.digest))) await blobs.delete(o.digest);
      await storage.audit.append({ principal: ctx.caller.principal, action: "job.object.delete", target: `${req.tenant}/${req.name}`, outcome: "ok", requestId: ctx.requestId, detail: { digest: o.digest } });
      return {};
    },
  };
}
