// Guest memory operations of the privileged executor (seed 002) on QEMU guests through QMP:
// a range read with pmemsave, or the whole memory with pmemsave over the guest RAM ("raw") or
// dump-guest-memory ("elf"). QEMU writes into a file in the VM's 0700 directory on the agent;
// small reads come back inline, larger ones are handed to the executor as a stream that it
// seals as it reads, and the file is removed once read or on any failure.
import { randomBytes } from "node:crypto";
import { open, readFile, rm, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import type { DumpGuestMemory, ReadGuestMemory } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { INLINE_MEMORY_READ_MAX } from "../../../../sdk/src/privileged/operations.js";
import type { ControlPlane } from "../../vm/agent/control-plane.js";
import type { DriverInstance } from "../../vm/agent/driver.js";
import { QemuDriver } from "../../vm/agent/drivers/qemu/qemu-driver.js";
import type { OperationOutput, StreamedOutput } from "./operation-output.js";

/** Plaintext read per step when streaming a dump: one envelope segment. */
const READ_CHUNK = 1024 * 1024;
/** Raw dumps read guest-physical 0..RAM size: only right while all RAM sits below the 32-bit PCI hole. */
const MAX_RAW_DUMP = 2 * 1024 ** 3;
/** QEMU writes a dump synchronously; allow it time for large guests (TCG is slow). */
const DUMP_TIMEOUT_MS = 10 * 60_000;

interface Guest {
  driver: QemuDriver;
  handle: DriverInstance;
  dir: string;
}

function qemuGuest(cp: ControlPlane, vmId: string, what: string): Guest {
  if (!vmId) throw invalidArgument("vm_id", "required");
  const guest = cp.runningGuest(vmId);
  if (!(guest.driver instanceof QemuDriver)) {
    throw new TrustplaneError("UNIMPLEMENTED", "DRIVER_UNSUPPORTED", `guest memory of ${vmId} cannot be ${what}: the ${guest.driver.name} driver offers no memory inspection (QEMU guests do, through QMP)`);
  }
  return { driver: guest.driver, handle: guest.handle, dir: guest.dir };
}

/** Guest RAM in bytes, as QEMU reports it. */
export async function guestMemoryBytes(g: Guest): Promise<number> {
  const summary = await (await g.driver.monitor(g.handle)).execute<{ "base-memory": number; "plugged-memory"?: number }>("query-memory-size-summary");
  return Number(summary["base-memory"]) + Number(summary["plugged-memory"] ?? 0);
}

/** The per-key limit (certificate option max_memory_read) and the agent's own (max_memory_read_bytes). */
export interface MemoryReadLimits {
  certificate?: number;
  agent?: number;
}

function checkLimits(what: string, bytes: number, limits: MemoryReadLimits): void {
  if (limits.certificate !== undefined && bytes > limits.certificate) {
    throw new TrustplaneError("PERMISSION_DENIED", "POLICY_DENIED", `${what} is ${bytes} bytes; the certificate allows at most ${limits.certificate} (max_memory_read)`, "certificate");
  }
  if (limits.agent !== undefined && bytes > limits.agent) {
    throw new TrustplaneError("RESOURCE_EXHAUSTED", "MEMORY_READ_LIMIT", `${what} is ${bytes} bytes; this agent allows at most ${limits.agent} per read (runtime config max_memory_read_bytes)`, "length");
  }
}

/** Streams a file QEMU wrote, then removes it; removal also happens if nobody reads it. */
/** The next READ_CHUNK bytes of the file (fewer at its end), or undefined at its end. */
async function readChunk(fh: FileHandle): Promise<Buffer | undefined> {
  const buffer = Buffer.allocUnsafe(READ_CHUNK);
  const { bytesRead } = await fh.read(buffer, 0, READ_CHUNK, null);
  if (bytesRead === 0) return undefined;
  // Never hand on bytes the read did not fill.
  return bytesRead < READ_CHUNK ? buffer.subarray(0, bytesRead) : buffer;
}

export function dumpFileStream(file: string, size: number): StreamedOutput {
  return {
    size,
    async *chunks() {
      // Each chunk is a buffer of its own, so it can be hashed and sealed as it comes; the
      // next read runs on the thread pool while the consumer hashes and seals this one.
      const fh = await open(file, "r");
      let next: Promise<Buffer | undefined> | undefined = readChunk(fh);
      try {
        for (;;) {
          const chunk = await next;
          if (!chunk) return;
          next = readChunk(fh);
          yield chunk;
        }
      } finally {
        await next?.catch(() => undefined);
        await fh.close();
      }
    },
    dispose: () => rm(file, { force: true }),
  };
}

export async function readGuestMemory(cp: ControlPlane, a: ReadGuestMemory, limits: MemoryReadLimits): Promise<OperationOutput> {
  const guest = qemuGuest(cp, a.vmId, "read");
  const ram = await guestMemoryBytes(guest);
  if (a.length <= 0 || a.length > ram) throw invalidArgument("length", `must be 1..${ram} bytes (the guest's memory); use dump_guest_memory for all of it`);
  checkLimits("the read", a.length, limits);
  const file = path.join(guest.dir, `memread-${randomBytes(6).toString("hex")}.bin`);
  try {
    await (await guest.driver.monitor(guest.handle)).execute("pmemsave", { val: Number(a.address), size: Number(a.length), filename: file }, DUMP_TIMEOUT_MS);
    const info = { vmId: a.vmId, format: "raw", guestMemoryBytes: ram };
    if (a.length <= INLINE_MEMORY_READ_MAX) {
      const data = await readFile(file);
      await rm(file, { force: true });
      return { data, memoryDump: info };
    }
    return { memoryDump: info, stream: dumpFileStream(file, (await stat(file)).size) };
  } catch (e) {
    await rm(file, { force: true });
    throw e;
  }
}

export async function dumpGuestMemory(cp: ControlPlane, a: DumpGuestMemory, limits: MemoryReadLimits): Promise<OperationOutput> {
  const format = a.format || "raw";
  if (format !== "raw" && format !== "elf") throw invalidArgument("format", `${JSON.stringify(a.format)} is not a dump format; use "raw" (all guest RAM) or "elf" (dump-guest-memory)`);
  const guest = qemuGuest(cp, a.vmId, "dumped");
  const ram = await guestMemoryBytes(guest);
  checkLimits(`the memory of ${a.vmId}`, ram, limits);
  if (format === "raw" && ram > MAX_RAW_DUMP) {
    throw new TrustplaneError("FAILED_PRECONDITION", "DUMP_FORMAT_UNSUITABLE", `${a.vmId} has ${ram} bytes of RAM, part of it above the 32-bit PCI hole; dump it with format "elf"`, "format");
  }
  const file = path.join(guest.dir, `memdump-${randomBytes(6).toString("hex")}.${format === "elf" ? "elf" : "bin"}`);
  try {
    const qmp = await guest.driver.monitor(guest.handle);
    if (format === "raw") await qmp.execute("pmemsave", { val: 0, size: ram, filename: file }, DUMP_TIMEOUT_MS);
    else await qmp.execute("dump-guest-memory", { paging: false, protocol: `file:${file}`, format: "elf" }, DUMP_TIMEOUT_MS);
    return { memoryDump: { vmId: a.vmId, format, guestMemoryBytes: ram }, stream: dumpFileStream(file, (await stat(file)).size) };
  } catch (e) {
    await rm(file, { force: true });
    throw e;
  }
}
