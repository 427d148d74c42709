// Config precedence (defaults < file < environment < flags) and validation at the edge.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TrustplaneError } from "../../sdk/src/errors.js";
import { DEFAULT_CONFIG, loadConfig } from "../../server/src/runtime/config.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function configFile(content: unknown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tp-config-"));
  dirs.push(dir);
  const file = path.join(dir, "config.json");
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
  return file;
}

describe("loadConfig", () => {
  it("uses embedded defaults", () => {
    const c = loadConfig({ env: {} });
    expect(c.listen).toBe(DEFAULT_CONFIG.listen);
    expect(c.skewSeconds).toBe(300);
    expect(c.databaseUrl).toBeUndefined();
    expect(path.isAbsolute(c.dataDir)).toBe(true);
  });

  it("applies file, then environment, then flags", () => {
    const file = configFile({ listen: "127.0.0.1:1000", skewSeconds: 60, logLevel: "debug" });
    const c = loadConfig({ file, env: { TRUSTPLANE_LISTEN: "127.0.0.1:2000", TRUSTPLANE_SKEW_SECONDS: "30" }, flags: { listen: "127.0.0.1:3000" } });
    expect(c.listen).toBe("127.0.0.1:3000");
    expect(c.skewSeconds).toBe(30);
    expect(c.logLevel).toBe("debug");
  });

  it("names the bad setting and its source", () => {
    const err = (() => {
      try {
        loadConfig({ env: { TRUSTPLANE_SKEW_SECONDS: "soon" } });
      } catch (e) {
        return e as TrustplaneError;
      }
    })();
    expect(err).toBeInstanceOf(TrustplaneError);
    expect(err!.reason).toBe("CONFIG_INVALID");
    expect(err!.message).toContain("skewSeconds (from environment)");
  });

  it.each([
    [{ listen: "nope" }, "listen"],
    [{ listen: "127.0.0.1:70000" }, "out of range"],
    [{ databaseUrl: "mysql://x" }, "postgres://"],
    [{ logLevel: "loud" }, "unknown level"],
    [{ surprise: 1 }, "unknown setting"],
    [{ tls: { certFile: "a" } }, "tls.keyFile"],
    [{ hostId: "Bad Host" }, "hostId"],
  ])("rejects %j", (raw, message) => {
    expect(() => loadConfig({ file: configFile(raw), env: {} })).toThrow(message);
  });

  it("reads --stop-vms as a boolean from the file, the environment or a flag, and names a bad one", () => {
    expect(loadConfig({ env: {} }).stopVmsOnShutdown).toBe(false);
    expect(loadConfig({ env: { TRUSTPLANE_STOP_VMS_ON_SHUTDOWN: "1" } }).stopVmsOnShutdown).toBe(true);
    expect(loadConfig({ file: configFile({ stopVmsOnShutdown: true }), env: {}, flags: { stopVmsOnShutdown: false } }).stopVmsOnShutdown).toBe(false);
    expect(() => loadConfig({ env: { TRUSTPLANE_STOP_VMS_ON_SHUTDOWN: "yes" } })).toThrow(/stopVmsOnShutdown \(from environment\): expected true or false/);
  });

  it("rejects a config file that is not a JSON object", () => {
    expect(() => loadConfig({ file: configFile("[1,2]"), env: {} })).toThrow("must hold a JSON object");
    expect(() => loadConfig({ file: configFile("{oops"), env: {} })).toThrow("config file");
  });
});
