// Sub-processors of the deploy worker (seed 001): the strict XML reader refuses DTDs and
// entities, manifests join continuation lines, package.json scripts are reported not run.
import { describe, expect, it } from "vitest";
import { parseStrictXml } from "../../server/src/deploy/worker/processors/security/strict-xml.js";
import { securityProcessor } from "../../server/src/deploy/worker/processors/security/security-processor.js";
import { parseManifest, splitPackages } from "../../server/src/deploy/worker/processors/metadata/manifest.js";
import { headings } from "../../server/src/deploy/worker/processors/documentation/documentation-processor.js";
import { MANIFEST } from "../../scripts/make-zip-corpus.js";

const noResources = { resource: async () => ({ roles: [] }) };

describe("strict XML", () => {
  it.each([
    ['<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><web-app>&lol;</web-app>'],
    ['<!DOCTYPE web-app SYSTEM "file:///etc/passwd"><web-app/>'],
    ["<web-app>&xxe;</web-app>"],
    ["<web-app><a></web-app>"],
    ["<web-app>a & b</web-app>"],
    ["<web-app/><second/>"],
  ])("rejects %s", (src) => {
    expect(() => parseStrictXml(src)).toThrow(expect.objectContaining({ reason: "DESCRIPTOR_INVALID" }));
  });

  it("reads elements, predefined entities and CDATA", () => {
    const r = parseStrictXml('<a x="1"><b>1 &lt; 2</b><c><![CDATA[<raw>]]></c><d/></a>');
    expect(r.children.map((c) => [c.name, c.text])).toEqual([["b", "1 < 2"], ["c", "<raw>"], ["d", ""]]);
  });

  it("rejects bad role names from any source", async () => {
    const files = new Map([["trustplane-roles.json", Buffer.from(JSON.stringify({ roles: [{ name: "a b<script>" }] }))]]);
    await expect(securityProcessor.run(files, noResources)).rejects.toMatchObject({ reason: "DESCRIPTOR_INVALID" });
  });

  it("asks the resource provider for the stored roles and reports the ones this archive drops", async () => {
    const asked: string[] = [];
    const files = new Map([["trustplane-roles.json", Buffer.from(JSON.stringify({ roles: [{ name: "reader" }] }))]]);
    const r = (await securityProcessor.run(files, {
      resource: async (id) => (asked.push(id), { roles: [{ name: "reader" }, { name: "writer" }, { name: "admin" }] }),
    })) as { removedRoles: string[] };
    expect(asked).toEqual(["roles.current"]);
    expect(r.removedRoles).toEqual(["admin", "writer"]);
  });
});

describe("manifest and docs", () => {
  it("joins 72-byte continuation lines and splits Import-Package outside quotes", () => {
    const m = parseManifest(MANIFEST);
    expect(m.get("Bundle-Version")).toBe("1.2.3");
    expect(splitPackages(m.get("Import-Package")!)).toEqual(['org.osgi.framework;version="[1.8,2)"', 'javax.servlet;version="4.0"']);
  });

  it("builds a table of contents from ATX and setext headings, skipping code fences", () => {
    expect(headings("Title\n=====\n\n## A\n```\n# not\n```\nB\n---\n")).toEqual([
      { level: 1, text: "Title" },
      { level: 2, text: "A" },
      { level: 2, text: "B" },
    ]);
  });
});
