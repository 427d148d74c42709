// Optional TLS and mTLS on the server: with a client CA configured, a client without a
// certificate from that CA cannot even reach the signed-call layer.
import type { JsonWebKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importSigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { AuthServiceService } from "../../sdk/src/gen/trustplane/auth/v1/service.js";
import { loadConfig } from "../../server/src/runtime/config.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { startServer, type ServerHandle } from "../../server/src/processes/server-process.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "tp-tls-"));
const f = (name: string) => path.join(dir, name);
const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });

function makePki(): void {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=tp-test-ca");
  for (const [name, ext] of [["server", "subjectAltName=IP:127.0.0.1"], ["client", "extendedKeyUsage=clientAuth"]] as const) {
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", `/CN=${name}`);
    execFileSync("sh", ["-c", `printf '%s\\n' '${ext}' > ${f(`${name}.ext`)}`]);
    openssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f(`${name}.pem`), "-days", "1", "-extfile", f(`${name}.ext`));
  }
}

let server: ServerHandle;

beforeAll(async () => {
  makePki();
  const config = loadConfig({
    env: {},
    flags: { dataDir: f("data"), listen: "127.0.0.1:0", tls: { certFile: f("server.pem"), keyFile: f("server.key"), clientCaFile: f("ca.pem") } },
  });
  server = await startServer(config, createLogger({ level: "silent" }));
});

afterAll(async () => {
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe("mTLS", () => {
  const admin = () => importSigningKey(JSON.parse(readFileSync(path.join(f("data"), "admin.jwk.json"), "utf8")) as JsonWebKey);

  it("accepts a signed call over TLS from a client with a certificate from the client CA", async () => {
    const credentials = grpc.credentials.createSsl(readFileSync(f("ca.pem")), readFileSync(f("client.key")), readFileSync(f("client.pem")));
    const auth = createClient(AuthServiceService, server.address, { key: admin(), credentials });
    try {
      expect((await auth.echo({ message: "over mtls" })).message).toBe("over mtls");
    } finally {
      auth.close();
    }
  });

  it("refuses a client without a client certificate", async () => {
    const credentials = grpc.credentials.createSsl(readFileSync(f("ca.pem")));
    const auth = createClient(AuthServiceService, server.address, { key: admin(), credentials });
    try {
      await expect(auth.echo({ message: "no cert" }, { deadlineMs: 5000 })).rejects.toMatchObject({ status: "UNAVAILABLE" });
    } finally {
      auth.close();
    }
  });

  it("refuses a plaintext client", async () => {
    const auth = createClient(AuthServiceService, server.address, { key: admin() });
    try {
      await expect(auth.echo({ message: "plaintext" }, { deadlineMs: 5000 })).rejects.toMatchObject({ status: "UNAVAILABLE" });
    } finally {
      auth.close();
    }
  });
});
