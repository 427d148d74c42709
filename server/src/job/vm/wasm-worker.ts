// The worker thread that runs a job's WebAssembly module (seed 003: "runs the code with memory
// and time limits"). The memory is the host's (imported `env.memory` with a hard maximum), so
// a module cannot allocate past the job's cap; the runner terminates this thread on the
// wall clock. ABI: sdk/src/job/ABI.md. Received plaintext is wiped once copied in.
// The worker runs from source text (eval): loaders such as tsx do not reach worker threads,
// so the body below is self-contained and shipped as `wasmWorkerSource()`.
import type { MessagePort } from "node:worker_threads";

interface Init {
  code: Uint8Array;
  maxPages: number;
}

type Exports = {
  alloc(len: number): number;
  feed(ptr: number, len: number): void;
  finish(): bigint;
  begin?: () => void;
};

// The ES2023 lib has no WebAssembly declarations; this is the part of the JS API used here.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmModuleImport {
  module: string;
  name: string;
  kind: string;
}
interface WasmApi {
  Module: { new (code: Uint8Array): object; imports(m: object): WasmModuleImport[] };
  Instance: new (m: object, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (d: { initial: number; maximum: number }) => WasmMemory;
  CompileError: new () => Error;
  LinkError: new () => Error;
}
export function wasmWorkerMain(port: MessagePort, init: Init): void {
  const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

  const WASM_PAGE = 65536;
  /** Pages the host's memory starts with; a module's declared minimum must not exceed it. */
  const INITIAL_PAGES = 16;

  let memory: WasmMemory | undefined;

  function fail(reason: string, detail: string): void {
    port.postMessage({ t: "error", reason, detail });
  }

  function classify(e: unknown): { reason: string; detail: string } {
    const detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    if (memory && memory.buffer.byteLength + WASM_PAGE > init.maxPages * WASM_PAGE) {
      return { reason: "MEMORY_LIMIT_EXCEEDED", detail: `the module used all ${init.maxPages * WASM_PAGE} bytes of its memory cap (${detail})` };
    }
    if (e instanceof RangeError && /memory|allocation/i.test(detail)) return { reason: "MEMORY_LIMIT_EXCEEDED", detail };
    return { reason: "MODULE_TRAPPED", detail };
  }

  function wipeMemory(): void {
    if (memory) new Uint8Array(memory.buffer).fill(0);
  }

  try {
    const module = new WebAssembly.Module(init.code);
    const imports = WebAssembly.Module.imports(module);
    const memImport = imports.find((i) => i.kind === "memory");
    if (!memImport || memImport.module !== "env" || memImport.name !== "memory") {
      throw Object.assign(new Error('the module must import its memory as (import "env" "memory" (memory N)) with N <= 16; see the job ABI'), { abi: true });
    }
    const other = imports.filter((i) => i !== memImport);
    if (other.length > 0) {
      throw Object.assign(new Error(`the module imports ${other.map((i) => `${i.module}.${i.name}`).join(", ")}; only env.memory is provided`), { abi: true });
    }
    memory = new WebAssembly.Memory({ initial: Math.min(INITIAL_PAGES, init.maxPages), maximum: init.maxPages });
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const ex = instance.exports as unknown as Exports;
    for (const name of ["alloc", "feed", "finish"] as const) {
      if (typeof ex[name] !== "function") throw Object.assign(new Error(`the module does not export ${name}; see the job ABI`), { abi: true });
    }
    ex.begin?.();
    port.postMessage({ t: "ready" });
    port.on("message", (m: { t: "chunk"; data: Uint8Array } | { t: "finish" }) => {
      try {
        if (m.t === "chunk") {
          const ptr = ex.alloc(m.data.length) >>> 0;
          // Bounds come from the host's view of memory, not from the module's word.
          new Uint8Array(memory!.buffer, ptr, m.data.length).set(m.data);
          m.data.fill(0);
          ex.feed(ptr, m.data.length);
          port.postMessage({ t: "ack" });
        } else {
          const packed = BigInt.asUintN(64, ex.finish());
          const ptr = Number(packed >> 32n);
          const len = Number(packed & 0xffffffffn);
          const out = new Uint8Array(len);
          out.set(new Uint8Array(memory!.buffer, ptr, len));
          wipeMemory();
          port.postMessage({ t: "result", data: out }, [out.buffer]);
        }
      } catch (e) {
        const c = classify(e);
        wipeMemory();
        fail(c.reason, c.detail);
      }
    });
  } catch (e) {
    const abi = (e as { abi?: boolean }).abi === true || e instanceof WebAssembly.CompileError || e instanceof WebAssembly.LinkError;
    wipeMemory();
    if (abi) fail("MODULE_INVALID", e instanceof Error ? e.message : String(e));
    else {
      const c = classify(e);
      fail(c.reason, c.detail);
    }
  }
}

/** Source text for `new Worker(source, { eval: true, workerData })`. */
export function wasmWorkerSource(): string {
  // `__name` covers the helper some TS transpilers insert to keep function names.
  return `var __name = (f) => f; const { parentPort, workerData } = require("node:worker_threads"); (${wasmWorkerMain.toString()})(parentPort, workerData);`;
}
