// Benchmark child processes answer one line per question on stdout (READY …, CPU …): this
// reads them in order, for any benchmark that runs its servers in their own processes so
// client and server crypto use separate cores (part of the `npm run bench` harness).
import type { ChildProcess } from "node:child_process";

/** The next line the child writes; rejects once the child has exited. */
export function childLines(child: ChildProcess): () => Promise<string> {
  const queue: string[] = [];
  const waiting: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  let exited: Error | undefined;
  let pending = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (d: string) => {
    pending += d;
    for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      const w = waiting.shift();
      if (w) w.resolve(line);
      else queue.push(line);
    }
  });
  child.once("exit", (code) => {
    exited = new Error(`bench child exited with ${code}`);
    for (const w of waiting.splice(0)) w.reject(exited);
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const l = queue.shift();
      if (l !== undefined) return resolve(l);
      if (exited) return reject(exited);
      waiting.push({ resolve, reject });
    });
}
