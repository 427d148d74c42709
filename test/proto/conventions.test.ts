// API conventions every .proto under proto/ must keep (the wire contract of the architecture's
// "Wire and API conventions"): fields declared in ascending order (canonical encoding relies
// on it), a request_id on every mutating RPC, stream headers, docs, and no stray maps.
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadProtoTree, parseProto, resolveMessage, type ProtoMessage, type ProtoRpc, type ProtoService } from "./proto-source.js";

const ROOT = path.resolve(import.meta.dirname, "../../proto");
const AREAS = ["token", "vm", "privileged", "deploy", "job"];

/** RPC names that change state: each must be idempotent under a client request_id. */
const MUTATING =
  /^(Create|Update|Delete|Start|Stop|Terminate|Attach|Detach|Configure|Issue|Rotate|Revoke|Renew|Release|Grant|Submit|Put|Apply|Undeploy|Register|Cancel|Set|Add|Deploy|Define|Join|Report)/;

/** Documented exceptions to "a mutating RPC carries request_id": method -> why. */
const REQUEST_ID_EXEMPT: Record<string, string> = {
  "trustplane.job.v1.JobVmService/ReportProgress":
    "latest-wins progress report: a retry overwrites the same value, so there is nothing to deduplicate",
};

/** Map fields that are truly maps (free-form string labels); anything else is a repeated message. */
const MAPS_ALLOWED: Record<string, string> = {
  "trustplane.auth.v1.JoinHostRequest.labels": "free-form host labels",
  "trustplane.auth.v1.Host.labels": "free-form host labels",
  "trustplane.deploy.v1.Deployment.metadata": "manifest headers and package fields by name",
};

const files = loadProtoTree(ROOT);
const messages = new Map<string, ProtoMessage>(files.flatMap((f) => f.messages.map((m) => [m.fullName, m] as const)));
const services: ProtoService[] = files.flatMap((f) => f.services);
const rpcs = services.flatMap((s) => s.rpcs.map((rpc) => ({ service: s, rpc, method: `${s.fullName}/${rpc.name}` })));
const pkgOf = (s: ProtoService) => s.fullName.slice(0, s.fullName.lastIndexOf("."));
const inAreas = (file: string) => AREAS.some((a) => file.startsWith(path.join("trustplane", a) + path.sep));

function requestOf(service: ProtoService, rpc: ProtoRpc): ProtoMessage {
  const m = resolveMessage(messages, pkgOf(service), rpc.request);
  if (!m) throw new Error(`${service.fullName}/${rpc.name}: request type ${rpc.request} not found`);
  return m;
}

/** The client-stream header of a request: the message type of its oneof member `header`. */
function streamHeader(request: ProtoMessage): ProtoMessage | undefined {
  const header = request.fields.find((f) => f.name === "header" && f.oneof);
  const pkg = request.fullName.slice(0, request.fullName.lastIndexOf("."));
  return header ? resolveMessage(messages, pkg, header.type) : undefined;
}

/** Where the request_id of an RPC is: the request itself or its stream header. */
function requestIdField(service: ProtoService, rpc: ProtoRpc) {
  const request = requestOf(service, rpc);
  const holder = request.fields.some((f) => f.name === "request_id") ? request : streamHeader(request);
  return holder?.fields.find((f) => f.name === "request_id");
}

describe("proto parser", () => {
  const parsed = parseProto(
    `// Header line one.
// Header line two.
syntax = "proto3";
package a.b.v1;
import "x/y.proto";
// Doc of S.
service S {
  // Doc of M.
  rpc M(stream A) returns (stream A.B);
  rpc N(A) returns (A) { option idempotency_level = NO_SIDE_EFFECTS; }
}
message A { string x = 1; // trailing, not a doc
  oneof o { int32 y = 2; string z = 3; }
  /* c = 9; */
  message B { map<string, string> m = 1; repeated int64 n = 2 [packed = true]; }
  reserved 4; bytes w = 5;
  enum E { E_UNSPECIFIED = 0; E_X = 7; }
  string s = 6 [json_name = "q;r"];
}
`,
    "fixture.proto",
  );

  it("reads package, imports, header and leading docs", () => {
    expect(parsed.pkg).toBe("a.b.v1");
    expect(parsed.imports).toEqual(["x/y.proto"]);
    expect(parsed.header).toEqual(["Header line one.", "Header line two."]);
    expect(parsed.services[0]!.doc).toBe("Doc of S.");
    expect(parsed.services[0]!.rpcs.map((r) => [r.name, r.doc, r.requestStream, r.response, r.responseStream])).toEqual([
      ["M", "Doc of M.", true, "A.B", true],
      ["N", undefined, false, "A", false],
    ]);
  });

  it("reads fields in declaration order with oneofs, nested messages and maps", () => {
    const byName = new Map(parsed.messages.map((m) => [m.localName, m]));
    expect(byName.get("A")!.fields.map((f) => [f.name, f.number, f.oneof])).toEqual([
      ["x", 1, undefined],
      ["y", 2, "o"],
      ["z", 3, "o"],
      ["w", 5, undefined],
      ["s", 6, undefined],
    ]);
    expect(byName.get("A")!.fields[0]!.doc).toBeUndefined();
    expect(byName.get("A.B")!.fields.map((f) => [f.name, f.map, f.repeated])).toEqual([
      ["m", true, false],
      ["n", false, true],
    ]);
    expect(byName.get("A.B")!.fullName).toBe("a.b.v1.A.B");
  });

  it("resolves relative and qualified type names", () => {
    const all = new Map(parsed.messages.map((m) => [m.fullName, m]));
    expect(resolveMessage(all, "a.b.v1", "A.B")?.fullName).toBe("a.b.v1.A.B");
    expect(resolveMessage(all, "c.d", "a.b.v1.A")?.fullName).toBe("a.b.v1.A");
    expect(resolveMessage(all, "a.b.v1", "Missing")).toBeUndefined();
  });
});

describe("proto conventions", () => {
  it("finds the APIs of every area", () => {
    for (const area of ["auth", ...AREAS]) expect(files.some((f) => f.pkg === `trustplane.${area}.v1`), area).toBe(true);
    expect(rpcs.length).toBeGreaterThan(80);
  });

  it.each(files.map((f) => [f.file, f] as const))("%s declares fields in ascending order, each number once", (_name, file) => {
    for (const message of file.messages) {
      const numbers = message.fields.map((f) => f.number);
      expect(numbers, `${message.fullName}: declare fields in ascending field-number order`).toEqual([...numbers].sort((a, b) => a - b));
      expect(new Set(numbers).size, `${message.fullName} repeats a field number`).toBe(numbers.length);
    }
  });

  it("gives every mutating RPC a string request_id = 1 (in the request or its stream header)", () => {
    const missing = rpcs
      .filter(({ rpc, method }) => MUTATING.test(rpc.name) && !(method in REQUEST_ID_EXEMPT))
      .filter(({ service, rpc }) => {
        const field = requestIdField(service, rpc);
        return !field || field.type !== "string" || field.number !== 1 || field.repeated;
      })
      .map(({ method }) => method);
    expect(missing, "add `string request_id = 1;` (client streams: to the header message)").toEqual([]);
  });

  it("keeps the request_id exemptions real: each names an existing mutating RPC without one", () => {
    for (const method of Object.keys(REQUEST_ID_EXEMPT)) {
      const found = rpcs.find((r) => r.method === method);
      expect(found, `${method} no longer exists; drop its exemption`).toBeDefined();
      expect(MUTATING.test(found!.rpc.name)).toBe(true);
      expect(requestIdField(found!.service, found!.rpc), `${method} has a request_id now; drop its exemption`).toBeUndefined();
    }
  });

  it("starts every client stream with a header (field 1 of a oneof) followed by bytes chunks", () => {
    const bad = rpcs
      .filter(({ rpc }) => rpc.requestStream && !rpc.responseStream)
      .filter(({ service, rpc }) => {
        const request = requestOf(service, rpc);
        const header = request.fields.find((f) => f.name === "header");
        const chunk = request.fields.find((f) => f.name === "chunk");
        return !header || header.number !== 1 || !header.oneof || !chunk || chunk.type !== "bytes" || chunk.oneof !== header.oneof;
      })
      .map(({ method }) => method);
    expect(bad).toEqual([]);
  });

  it("uses maps only where they are truly maps", () => {
    const maps = [...messages.values()].flatMap((m) => m.fields.filter((f) => f.map).map((f) => `${m.fullName}.${f.name}`));
    expect(maps.filter((name) => !(name in MAPS_ALLOWED)), "prefer a repeated message, or add the map to MAPS_ALLOWED with a reason").toEqual([]);
  });

  it("imports no google well-known types (times are *_ms, durations *_seconds/*_ms)", () => {
    const google = files.flatMap((f) => f.imports.filter((i) => i.startsWith("google/")).map((i) => `${f.file}: ${i}`));
    expect(google).toEqual([]);
  });

  it("opens every file with a header comment of at least two lines", () => {
    expect(files.filter((f) => f.header.length < 2).map((f) => f.file)).toEqual([]);
  });

  describe.each(AREAS)("%s", (area) => {
    const own = services.filter((s) => inAreas(s.file) && s.fullName.startsWith(`trustplane.${area}.v1.`));

    it("names services XxxService and says which process serves them", () => {
      expect(own.length).toBeGreaterThan(0);
      for (const s of own) {
        expect(s.name, s.fullName).toMatch(/^[A-Z][A-Za-z0-9]*Service$/);
        expect(s.doc ?? "", `${s.fullName}: the doc comment should say whether the server or the agent serves it`).toMatch(/\b(server|agent)\b/i);
      }
    });

    it("documents every RPC", () => {
      const undocumented = own.flatMap((s) => s.rpcs.filter((r) => !r.doc).map((r) => `${s.fullName}/${r.name}`));
      expect(undocumented, "add a // comment above each rpc saying what it does").toEqual([]);
    });
  });
});
