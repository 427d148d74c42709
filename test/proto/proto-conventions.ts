// The API conventions of the architecture's "Wire and API conventions" as checks over parsed
// .proto files. Each check returns the violations it found (empty: none), so the tests can
// prove every check catches a bad fixture before trusting it on the real tree.
import path from "node:path";
import { resolveMessage, type ProtoFile, type ProtoMessage, type ProtoRpc, type ProtoService } from "./proto-source.js";

/** RPC names that change state: each must be idempotent under a client request_id. */
export const MUTATING =
  /^(Create|Update|Delete|Start|Stop|Terminate|Attach|Detach|Configure|Issue|Rotate|Revoke|Renew|Release|Grant|Pause|Resume|Submit|Put|Apply|Undeploy|Register|Cancel|Set|Add|Deploy|Define|Join|Report)/;

export interface ProtoIndex {
  files: ProtoFile[];
  messages: Map<string, ProtoMessage>;
  rpcs: { service: ProtoService; rpc: ProtoRpc; method: string }[];
}

export function indexProtos(files: ProtoFile[]): ProtoIndex {
  const messages = new Map<string, ProtoMessage>(files.flatMap((f) => f.messages.map((m) => [m.fullName, m] as const)));
  const rpcs = files.flatMap((f) => f.services).flatMap((service) => service.rpcs.map((rpc) => ({ service, rpc, method: `${service.fullName}/${rpc.name}` })));
  return { files, messages, rpcs };
}

const packageOf = (fullName: string) => fullName.slice(0, fullName.lastIndexOf("."));

function requestOf(index: ProtoIndex, service: ProtoService, rpc: ProtoRpc): ProtoMessage | undefined {
  return resolveMessage(index.messages, packageOf(service.fullName), rpc.request);
}

/** The client-stream header of a request: the message type of its oneof member `header`. */
function streamHeader(index: ProtoIndex, request: ProtoMessage): ProtoMessage | undefined {
  const header = request.fields.find((f) => f.name === "header" && f.oneof);
  return header ? resolveMessage(index.messages, packageOf(request.fullName), header.type) : undefined;
}

/** The request_id field of an RPC: in the request itself or in its stream header. */
export function requestIdField(index: ProtoIndex, service: ProtoService, rpc: ProtoRpc) {
  const request = requestOf(index, service, rpc);
  if (!request) return undefined;
  const holder = request.fields.some((f) => f.name === "request_id") ? request : streamHeader(index, request);
  return holder?.fields.find((f) => f.name === "request_id");
}

/** Messages whose fields are not declared in ascending order, or that repeat a number. */
export function fieldOrderViolations(index: ProtoIndex): string[] {
  return [...index.messages.values()].flatMap((m) => {
    const numbers = m.fields.map((f) => f.number);
    const out: string[] = [];
    if (numbers.some((n, i) => i > 0 && n < numbers[i - 1]!)) out.push(`${m.fullName}: fields out of order (${numbers.join(", ")})`);
    if (new Set(numbers).size !== numbers.length) out.push(`${m.fullName}: a field number is used twice`);
    return out;
  });
}

/** Mutating RPCs without `string request_id = 1` in the request or its stream header. */
export function missingRequestIds(index: ProtoIndex, exempt: Record<string, string>): string[] {
  return index.rpcs
    .filter(({ rpc, method }) => MUTATING.test(rpc.name) && !(method in exempt))
    .filter(({ service, rpc }) => {
      const field = requestIdField(index, service, rpc);
      return !field || field.type !== "string" || field.number !== 1 || field.repeated;
    })
    .map(({ method }) => method);
}

/** Exemptions that no longer apply: the RPC is gone, not mutating, or has a request_id now. */
export function staleExemptions(index: ProtoIndex, exempt: Record<string, string>): string[] {
  return Object.keys(exempt).filter((method) => {
    const found = index.rpcs.find((r) => r.method === method);
    return !found || !MUTATING.test(found.rpc.name) || requestIdField(index, found.service, found.rpc) !== undefined;
  });
}

/** Client streams (not bidi) whose request is not `oneof { Header header = 1; bytes chunk = N; }`. */
export function badClientStreams(index: ProtoIndex): string[] {
  return index.rpcs
    .filter(({ rpc }) => rpc.requestStream && !rpc.responseStream)
    .filter(({ service, rpc }) => {
      const request = requestOf(index, service, rpc);
      const header = request?.fields.find((f) => f.name === "header");
      const chunk = request?.fields.find((f) => f.name === "chunk");
      return !header || header.number !== 1 || !header.oneof || !chunk || chunk.type !== "bytes" || chunk.oneof !== header.oneof;
    })
    .map(({ method }) => method);
}

/** Map fields not on the allow-list (anything that is not truly a map is a repeated message). */
export function disallowedMaps(index: ProtoIndex, allowed: Record<string, string>): string[] {
  return [...index.messages.values()]
    .flatMap((m) => m.fields.filter((f) => f.map).map((f) => `${m.fullName}.${f.name}`))
    .filter((name) => !(name in allowed));
}

/** Imports of google's well-known types (times are *_ms int64, durations *_seconds/*_ms). */
export function googleImports(index: ProtoIndex): string[] {
  return index.files.flatMap((f) => f.imports.filter((i) => i.startsWith("google/")).map((i) => `${f.file}: ${i}`));
}

/** Files without a header comment of at least two lines before `syntax`. */
export function missingFileHeaders(index: ProtoIndex): string[] {
  return index.files.filter((f) => f.header.length < 2).map((f) => f.file);
}

const inArea = (file: string, area: string) => file.startsWith(path.join("trustplane", area) + path.sep) || file.startsWith(`trustplane/${area}/`);

/** Services of an area not named XxxService, or whose doc does not say which process serves them. */
export function serviceNamingViolations(index: ProtoIndex, area: string): string[] {
  return index.files
    .filter((f) => inArea(f.file, area))
    .flatMap((f) => f.services)
    .flatMap((s) => {
      const out: string[] = [];
      if (!/^[A-Z][A-Za-z0-9]*Service$/.test(s.name)) out.push(`${s.fullName}: name services XxxService`);
      if (!/\b(server|agent)\b/i.test(s.doc ?? "")) out.push(`${s.fullName}: say in its doc comment whether the server or the agent serves it`);
      return out;
    });
}

/** RPCs of an area without a doc comment. */
export function undocumentedRpcs(index: ProtoIndex, area: string): string[] {
  return index.files
    .filter((f) => inArea(f.file, area))
    .flatMap((f) => f.services)
    .flatMap((s) => s.rpcs.filter((r) => !r.doc?.trim()).map((r) => `${s.fullName}/${r.name}`));
}
