// A real QEMU guest fetches a short-term token with busybox wget from 169.254.169.254 (seed 000):
// the tiny guest of scripts/build-guest.sh with a test /init layered over it (a second cpio
// archive, so the VM area's image stays as built) boots under the qemu driver, whose guestfwd
// sends 169.254.169.254:80 to a real VM authorization process; the token verifies with jose.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRemoteJWKSet } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { HypervisorType, InstanceSpec } from "../../sdk/src/gen/trustplane/vm/v1/vm.js";
import { createLogger } from "../../server/src/runtime/logger.js";
import { verifyAccessToken } from "../../server/src/token/authority/access-token-verifier.js";
import { ConsoleWatcher } from "../../server/src/vm/agent/console-watcher.js";
import { ControlPlane } from "../../server/src/vm/agent/control-plane.js";
import { QemuDriver, qemuAvailable } from "../../server/src/vm/agent/drivers/qemu/qemu-driver.js";
import { ISSUER, STORAGE_AUD, createAuthority, startJwksServer, startVm } from "./token-fixture.js";

// Root as CI is; the guest needs qemu, socat (guestfwd) and busybox to lay the test /init.
const ready = process.getuid?.() === 0 && qemuAvailable() && existsSync("/usr/bin/socat") && existsSync("/usr/bin/busybox");
const SA = "builder@acme.trustplane";
const dir = mkdtempSync(path.join(os.tmpdir(), "tp-qemu-token-"));
const vmId = `vm-qtok-${Math.random().toString(36).slice(2, 8)}`;

// What the guest runs: the same bring-up as the stock /init, then busybox wget against the
// metadata address with and without the header, and beyond the grant, each on one line.
const INIT = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </etc/modules.order
echo "TRUSTPLANE-GUEST-READY kernel=$(uname -r)"
ifconfig lo up
ifconfig eth0 up
udhcpc -q -n -t 5 -T 1 -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1 || echo "TRUSTPLANE-NET eth0 no-lease"
B=http://169.254.169.254/computeMetadata/v1/instance/service-accounts
echo "GUEST-TOKEN $(wget -q -O - --header 'Metadata-Flavor: Google' $B/default/token 2>&1 | tr -d '\\n')"
echo "GUEST-NOFLAVOR $(wget -q -O - $B/default/token 2>&1 | tr -d '\\n' | head -c 200)"
echo "GUEST-ESCALATE $(wget -q -O - --header 'Metadata-Flavor: Google' "$B/default/token?scopes=queue.publish" 2>&1 | tr -d '\\n' | head -c 200)"
while :; do sleep 3600; done
`;

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!ready)("a QEMU guest's own busybox wget at 169.254.169.254", () => {
  it("gets a token that verifies against the JWKS; no header is 403, scope escalation is 403", { timeout: 180_000 }, async () => {
    const auth = await createAuthority();
    const jwks = await startJwksServer(auth.keys);
    const vm = await startVm(auth, { vmId, hostId: "h1", accounts: [{ serviceAccount: SA, scopes: ["storage.read"] }] });
    const base = new QemuDriver();
    const { kernel, initrd } = await base.ensureGuest();
    // The stock image plus one more archive holding /init: the kernel unpacks both in order.
    const guestDir = path.join(dir, "guest");
    const overlay = path.join(dir, "overlay");
    execFileSync("mkdir", ["-p", guestDir, overlay]);
    writeFileSync(path.join(overlay, "init"), INIT);
    chmodSync(path.join(overlay, "init"), 0o755);
    const cpio = execFileSync("/bin/sh", ["-c", "echo init | busybox cpio -o -H newc 2>/dev/null | gzip -6"], { cwd: overlay });
    copyFileSync(kernel, path.join(guestDir, "vmlinuz"));
    // The driver rebuilds a guest whose manifest does not name the current GUEST_VERSION.
    copyFileSync(path.join(path.dirname(initrd), "manifest"), path.join(guestDir, "manifest"));
    writeFileSync(path.join(guestDir, "initramfs.cpio.gz"), Buffer.concat([readFileSync(initrd), cpio]));
    const accel = path.join(base.guestDir, "accelerator.json");
    if (existsSync(accel)) copyFileSync(accel, path.join(guestDir, "accelerator.json"));

    const cp = new ControlPlane("h1", [new QemuDriver({ guestDir })], path.join(dir, "vms"), createLogger({ level: "silent" }), {
      metadataEndpoint: async () => ({ host: "127.0.0.1", port: vm.port }),
    });
    try {
      await cp.create(InstanceSpec.fromPartial({ vmId, name: vmId, hypervisor: HypervisorType.HYPERVISOR_TYPE_QEMU, image: "tiny-linux", resources: { vcpus: 1, memoryMib: 192 }, network: { mode: "user", portForwards: [] } }), true, "tester");
      const consoleLog = new ConsoleWatcher(path.join(dir, "vms", vmId, "console.log"));
      await consoleLog.waitFor(/^GUEST-ESCALATE /, 60_000);
      const line = (tag: string) => consoleLog.lines.find((l) => l.startsWith(`${tag} `))!.slice(tag.length + 1);

      const body = JSON.parse(line("GUEST-TOKEN")) as { access_token: string; expires_in: number; token_type: string };
      expect(body.token_type).toBe("Bearer");
      expect(body.expires_in).toBeGreaterThan(300);
      const claims = await verifyAccessToken(body.access_token, { keys: createRemoteJWKSet(jwks.url), issuer: ISSUER, audience: STORAGE_AUD }, ["storage.read"]);
      expect(claims).toMatchObject({ sub: SA, tp_vm: vmId, tp_host: "h1" });
      // The long-term secret never reached the guest's console.
      expect(consoleLog.lines.join("\n")).not.toMatch(/tplt_/);
      expect(line("GUEST-NOFLAVOR")).toMatch(/403/);
      expect(line("GUEST-ESCALATE")).toMatch(/403/);
      expect(vm.state.accessMints).toBe(1);
    } finally {
      await cp.terminate(vmId, "tester").catch(() => undefined);
      await vm.stop();
      await jwks.close();
    }
  });
});
