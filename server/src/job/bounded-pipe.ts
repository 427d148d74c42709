// A bounded hand-over between one writer and one reader (seed 003, "data straight to the job
// VM"): the client's SendJobInput stream writes, the job VM's ReadJobInput stream reads, and
// the writer waits while `capacity` chunks are in flight, so the service never holds more
// than that of a streamed input however large it is (gRPC flow control slows the client).
export class BoundedPipe<T> implements AsyncIterable<T> {
  private readonly queue: T[] = [];
  private readonly spaceWaiters: (() => void)[] = [];
  private dataWaiter: (() => void) | undefined;
  private ended = false;
  private error: Error | undefined;
  private taken = false;

  constructor(private readonly capacity: number) {}

  /** Resolves once the item is queued; throws once the pipe failed (the reader is gone). */
  async write(item: T): Promise<void> {
    while (this.queue.length >= this.capacity && !this.error) await new Promise<void>((r) => this.spaceWaiters.push(r));
    if (this.error) throw this.error;
    if (this.ended) throw new Error("write after end");
    this.queue.push(item);
    this.wakeReader();
  }

  end(): void {
    this.ended = true;
    this.wakeReader();
  }

  /** Fails both sides: the reader's iteration throws, pending and later writes throw. */
  fail(error: Error): void {
    if (this.error) return;
    this.error = error;
    this.queue.length = 0;
    for (const w of this.spaceWaiters.splice(0)) w();
    this.wakeReader();
  }

  private wakeReader(): void {
    const w = this.dataWaiter;
    this.dataWaiter = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.taken) throw new Error("a bounded pipe has one reader");
    this.taken = true;
    for (;;) {
      if (this.error) throw this.error;
      const item = this.queue.shift();
      if (item !== undefined) {
        this.spaceWaiters.shift()?.();
        yield item;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((r) => (this.dataWaiter = r));
    }
  }
}
