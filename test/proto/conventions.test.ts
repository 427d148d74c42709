// API conventions every .proto under proto/ must keep (architecture, "Wire and API
// conventions"): fields in ascending order (canonical encoding relies on it), a request_id on
// every mutating RPC, client-stream headers, docs, no stray maps. Each check first proves it
// catches a bad fixture, then runs on the real tree.
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  badClientStreams,
  disallowedMaps,
  fieldOrderViolations,
  googleImports,
  indexProtos,
  missingFileHeaders,
  missingRequestIds,
  serviceNamingViolations,
  staleExemptions,
  undocumentedRpcs,
} from "./proto-conventions.js";
import { loadProtoTree, parseProto, resolveMessage } from "./proto-source.js";

const ROOT = path.resolve(import.meta.dirname, "../../proto");
const AREAS = ["token", "vm", "privileged", "deploy", "job"];

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

const tree = indexProtos(loadProtoTree(ROOT));

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

  it("refuses what it cannot read instead of skipping it", () => {
    expect(() => parseProto("message A { string x = ; }")).toThrow(/no number/);
    expect(() => parseProto("service S { frob }")).toThrow(/unexpected "frob"/);
    expect(() => parseProto("message A { /* open")).toThrow(/unterminated/);
  });
});

describe("each check catches a bad fixture", () => {
  // One file breaking every convention once, and one keeping them all.
  const bad = indexProtos([
    parseProto(
      `syntax = "proto3";
package trustplane.token.v1;
import "google/protobuf/timestamp.proto";
service Tokens {
  rpc CreateThing(CreateThingRequest) returns (Empty);
  rpc PutBlob(stream PutBlobRequest) returns (Empty);
  rpc UploadRaw(stream Chunk) returns (Empty);
}
message CreateThingRequest { string name = 2; string request_id = 1; }
message PutBlobHeader { string tenant = 1; }
message PutBlobRequest { oneof kind { PutBlobHeader header = 1; bytes chunk = 2; } }
message Chunk { bytes data = 1; }
message Empty { map<string, int32> counts = 1; }
`,
      "trustplane/token/v1/bad.proto",
    ),
  ]);
  const good = indexProtos([
    parseProto(
      `// Good fixture, line one.
// Line two.
syntax = "proto3";
package trustplane.token.v1;
// Served by the server.
service TokenFixtureService {
  // Creates a thing.
  rpc CreateThing(CreateThingRequest) returns (Empty);
  // Streams a blob.
  rpc PutBlob(stream PutBlobRequest) returns (Empty);
}
message CreateThingRequest { string request_id = 1; string name = 2; }
message PutBlobHeader { string request_id = 1; string tenant = 2; }
message PutBlobRequest { oneof kind { PutBlobHeader header = 1; bytes chunk = 2; } }
message Empty {}
`,
      "trustplane/token/v1/good.proto",
    ),
  ]);

  it("field order", () => {
    expect(fieldOrderViolations(bad)).toEqual(["trustplane.token.v1.CreateThingRequest: fields out of order (2, 1)"]);
    expect(fieldOrderViolations(good)).toEqual([]);
  });

  it("request_id, directly or in a stream header", () => {
    // CreateThing has one (out of order, caught above); PutBlob's header lacks one.
    expect(missingRequestIds(bad, {})).toEqual(["trustplane.token.v1.Tokens/PutBlob"]);
    expect(missingRequestIds(bad, { "trustplane.token.v1.Tokens/PutBlob": "fixture" })).toEqual([]);
    expect(missingRequestIds(good, {})).toEqual([]);
    expect(staleExemptions(good, { "trustplane.token.v1.TokenFixtureService/CreateThing": "has one" })).toHaveLength(1);
    expect(staleExemptions(good, { "trustplane.token.v1.Gone/Method": "gone" })).toHaveLength(1);
  });

  it("client-stream shape", () => {
    expect(badClientStreams(bad)).toEqual(["trustplane.token.v1.Tokens/UploadRaw"]);
    expect(badClientStreams(good)).toEqual([]);
  });

  it("maps, imports, headers, naming, docs", () => {
    expect(disallowedMaps(bad, {})).toEqual(["trustplane.token.v1.Empty.counts"]);
    expect(disallowedMaps(bad, { "trustplane.token.v1.Empty.counts": "fixture" })).toEqual([]);
    expect(googleImports(bad)).toHaveLength(1);
    expect(missingFileHeaders(bad)).toEqual(["trustplane/token/v1/bad.proto"]);
    expect(serviceNamingViolations(bad, "token")).toHaveLength(2);
    expect(undocumentedRpcs(bad, "token")).toHaveLength(3);
    for (const check of [googleImports, missingFileHeaders]) expect(check(good)).toEqual([]);
    expect(disallowedMaps(good, {})).toEqual([]);
    expect(serviceNamingViolations(good, "token")).toEqual([]);
    expect(undocumentedRpcs(good, "token")).toEqual([]);
  });
});

describe("the proto tree keeps the conventions", () => {
  it("has the APIs of every area", () => {
    for (const area of ["auth", ...AREAS]) expect(tree.files.some((f) => f.pkg === `trustplane.${area}.v1`), area).toBe(true);
    expect(tree.rpcs.length).toBeGreaterThan(80);
  });

  it("declares fields in ascending order, each number once", () => {
    expect(fieldOrderViolations(tree), "declare fields in ascending field-number order").toEqual([]);
  });

  it("gives every mutating RPC a string request_id = 1 (in the request or its stream header)", () => {
    expect(missingRequestIds(tree, REQUEST_ID_EXEMPT), "add `string request_id = 1;` (client streams: to the header)").toEqual([]);
    expect(staleExemptions(tree, REQUEST_ID_EXEMPT), "drop exemptions that no longer apply").toEqual([]);
  });

  it("starts every client stream with a header (field 1 of a oneof) beside bytes chunks", () => {
    expect(badClientStreams(tree)).toEqual([]);
  });

  it("uses maps only where they are truly maps", () => {
    expect(disallowedMaps(tree, MAPS_ALLOWED), "prefer a repeated message, or allow the map here with a reason").toEqual([]);
  });

  it("imports no google well-known types and opens every file with a header comment", () => {
    expect(googleImports(tree)).toEqual([]);
    expect(missingFileHeaders(tree)).toEqual([]);
  });

  it.each(AREAS)("%s: services are XxxService, say which process serves them, and every rpc is documented", (area) => {
    expect(tree.files.some((f) => f.pkg === `trustplane.${area}.v1` && f.services.length > 0)).toBe(true);
    expect(serviceNamingViolations(tree, area)).toEqual([]);
    expect(undocumentedRpcs(tree, area), "add a // comment above each rpc saying what it does").toEqual([]);
  });
});
