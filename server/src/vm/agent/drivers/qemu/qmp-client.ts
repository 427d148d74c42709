// A QMP (QEMU Machine Protocol) client over the instance's unix socket: reads the greeting,
// negotiates qmp_capabilities, correlates each command with its response by `id`, and emits
// asynchronous events (SHUTDOWN, STOP, RESUME, POWERDOWN, DEVICE_DELETED...). Used by the qemu driver.
import { EventEmitter } from "node:events";
import net from "node:net";
import { TrustplaneError } from "../../../../../../sdk/src/errors.js";

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  command: string;
}

export class QmpClient extends EventEmitter {
  private socket?: net.Socket;
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedError?: Error;
  version = "";

  /** Connects (retrying while QEMU creates the socket) and negotiates capabilities. */
  static async connect(socketPath: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const client = new QmpClient();
      try {
        await client.open(socketPath, Math.max(500, deadline - Date.now()));
        return client;
      } catch (e) {
        client.close();
        if (Date.now() > deadline) throw new TrustplaneError("UNAVAILABLE", "QMP_UNAVAILABLE", `cannot reach QMP at ${socketPath}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private open(socketPath: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      this.socket = socket;
      const timer = setTimeout(() => fail(new Error("no QMP greeting")), timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(e);
      };
      socket.once("error", fail);
      socket.setEncoding("utf8");
      let greeted = false;
      socket.on("data", (chunk: string) => {
        this.buffer += chunk;
        let nl: number;
        while ((nl = this.buffer.indexOf("\n")) >= 0) {
          const line = this.buffer.slice(0, nl).trim();
          this.buffer = this.buffer.slice(nl + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!greeted && "QMP" in msg) {
            greeted = true;
            const v = (msg.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } }).version?.qemu;
            if (v) this.version = `${v.major}.${v.minor}.${v.micro}`;
            this.execute("qmp_capabilities").then(
              () => {
                clearTimeout(timer);
                socket.off("error", fail);
                socket.on("error", (e) => this.shutdown(e));
                resolve();
              },
              (e: Error) => fail(e),
            );
            continue;
          }
          this.dispatch(msg);
        }
      });
      socket.on("close", () => this.shutdown(new Error("QMP connection closed")));
    });
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.event === "string") {
      const ev: QmpEvent = { event: msg.event, data: (msg.data as Record<string, unknown>) ?? {}, timestamp: msg.timestamp as QmpEvent["timestamp"] };
      this.emit("event", ev);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    if ("error" in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new TrustplaneError("FAILED_PRECONDITION", "QMP_ERROR", `QMP ${p.command} failed: ${err.class ?? "Error"}: ${err.desc ?? "unknown"}`));
    } else {
      p.resolve(msg.return);
    }
  }

  private shutdown(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.values()) p.reject(new TrustplaneError("UNAVAILABLE", "QMP_CLOSED", `QMP ${p.command}: ${e.message}`));
    this.pending.clear();
    this.emit("close", e);
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs one QMP command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedError || !this.socket) return Promise.reject(new TrustplaneError("UNAVAILABLE", "QMP_CLOSED", `QMP ${command}: connection closed`));
    const id = `tp-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TrustplaneError("DEADLINE_EXCEEDED", "QMP_TIMEOUT", `QMP ${command} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket!.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + "\n");
    });
  }

  /** Resolves with the first event named `name` that satisfies `match`, or rejects after `timeoutMs`. */
  waitForEvent(name: string, match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const on = (e: QmpEvent) => {
        if (e.event === name && match(e)) {
          cleanup();
          resolve(e);
        }
      };
      const onClose = () => {
        cleanup();
        reject(new TrustplaneError("UNAVAILABLE", "QMP_CLOSED", `QMP closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new TrustplaneError("DEADLINE_EXCEEDED", "QMP_EVENT_TIMEOUT", `no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", on);
        this.off("close", onClose);
      };
      this.on("event", on);
      this.once("close", onClose);
    });
  }

  close(): void {
    this.socket?.destroy();
    this.shutdown(new Error("closed by the agent"));
  }
}
