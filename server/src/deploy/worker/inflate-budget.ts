// The global inflation budget of the core processor (deploy validation, seed 001): one
// counter shared by all entries of an archive and of the archives nested in it.
import { reject } from "./archive-rejection.js";

export class InflateBudget {
  used = 0;
  entries = 0;
  constructor(readonly maxBytes: number, readonly maxEntries: number) {}

  spend(bytes: number): void {
    this.used += bytes;
    if (this.used > this.maxBytes) throw reject("ARCHIVE_BUDGET", `more than ${this.maxBytes} bytes inflated in total`);
  }

  countEntries(n: number): void {
    this.entries += n;
    if (this.entries > this.maxEntries) throw reject("ARCHIVE_TOO_MANY_ENTRIES", `more than ${this.maxEntries} entries including nested archives`);
  }
}
