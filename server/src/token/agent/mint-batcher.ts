// The agent's access-token mints, batched (seed 000, minting at the authority): a mint asked for
// while no call is in flight goes out at once, alone; mints asked for while one is in flight wait
// for it and then go out together in one MintAccessTokens call. No timer, so a lone mint is never
// delayed, and a burst (many VMs refreshing) pays one call signature per batch, not per token.
import { TrustplaneError, type StatusName } from "../../../../sdk/src/errors.js";
import type { MintAccessTokenRequest, MintAccessTokenResponse, MintAccessTokensRequest, MintAccessTokensResponse } from "../../../../sdk/src/gen/trustplane/token/v1/token.js";

/** One call that carries a batch (signed with whatever key the caller chooses). */
export type SendBatch = (req: MintAccessTokensRequest) => Promise<MintAccessTokensResponse>;

interface Pending {
  request: MintAccessTokenRequest;
  resolve(r: MintAccessTokenResponse): void;
  reject(e: unknown): void;
}

export class MintBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;
  readonly stats = { calls: 0, mints: 0, largestBatch: 0 };

  constructor(
    private readonly send: SendBatch,
    /** Calls in flight before the next mints wait and batch up. Default 1. */
    private readonly maxInFlight = 1,
    /** At most the server's MAX_MINT_BATCH. */
    private readonly maxBatch = 64,
  ) {}

  mint(request: MintAccessTokenRequest): Promise<MintAccessTokenResponse> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      this.stats.calls++;
      this.stats.mints += batch.length;
      this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
      void this.run(batch);
    }
  }

  private async run(batch: Pending[]): Promise<void> {
    let res: MintAccessTokensResponse | undefined;
    let failure: unknown;
    try {
      res = await this.send({ requests: batch.map((p) => p.request) });
    } catch (e) {
      failure = e;
    }
    // Free the slot before answering, so a caller that mints again right away is not queued
    // behind a call that is already over.
    this.inFlight--;
    batch.forEach((p, i) => {
      // The whole call failed (unreachable, call signature refused): every mint in it did.
      if (!res) return p.reject(failure);
      const r = res.results[i];
      if (!r) p.reject(new TrustplaneError("INTERNAL", "BATCH_SHORT", "the authority answered fewer mints than were asked"));
      else if (r.errorStatus) p.reject(new TrustplaneError(r.errorStatus as StatusName, r.errorReason, r.errorMessage));
      else if (!r.token) p.reject(new TrustplaneError("INTERNAL", "BATCH_EMPTY_RESULT", "the authority answered a mint with neither a token nor an error"));
      else p.resolve(r.token);
    });
    this.pump();
  }
}
