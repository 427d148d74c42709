// A free TCP port on the host's loopback, for a port forward whose host_port is 0 (seed 004:
// "0 picks a free port, reported back in the VM record"). The port is released before the
// driver binds it, so the driver's own bind is what finally claims it.
import net from "node:net";

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
