// The agent's patchable runtime configuration (apply_config_patch): only allow-listed keys,
// each validated; every change gets a patch id, is written atomically (temp + rename) with its
// history, applied live, and can be reverted by id.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";
import type { ConfigPatchResult } from "../../../../sdk/src/gen/trustplane/privileged/v1/privileged.js";
import { AsyncMutex } from "../../runtime/storage/async-mutex.js";

export interface PatchableKey {
  validate(value: string): string | undefined;
  /** Applies the value to the running agent. */
  apply(value: string): void;
  initial: string;
}

interface Patch {
  patchId: string;
  key: string;
  previousValue: string;
  value: string;
  requestId: string;
  revertedBy?: string;
}

interface State {
  values: Record<string, string>;
  patches: Patch[];
}

export class RuntimeConfigStore {
  private state: State;
  /** Patches one at a time: each is read, written and applied against the state before it. */
  private readonly mutex = new AsyncMutex();

  constructor(
    private readonly file: string,
    private readonly keys: Record<string, PatchableKey>,
  ) {
    const initial = Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, v.initial]));
    this.state = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as State) : { values: initial, patches: [] };
    for (const [k, v] of Object.entries(this.state.values)) if (keys[k]) keys[k]!.apply(v);
  }

  get(key: string): string | undefined {
    return this.state.values[key];
  }

  private async persist(next: State): Promise<void> {
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${randomBytes(4).toString("hex")}.tmp`;
    await writeFile(tmp, JSON.stringify(next), { mode: 0o600 });
    await rename(tmp, this.file);
    this.state = next;
  }

  async apply(key: string, value: string, requestId: string): Promise<ConfigPatchResult> {
    const release = await this.mutex.lock();
    try {
      return await this.change(key, value, requestId);
    } finally {
      release();
    }
  }

  async revert(patchId: string, requestId: string): Promise<ConfigPatchResult> {
    const release = await this.mutex.lock();
    try {
      return await this.revertLocked(patchId, requestId);
    } finally {
      release();
    }
  }

  private async revertLocked(patchId: string, requestId: string): Promise<ConfigPatchResult> {
    const patch = this.state.patches.find((p) => p.patchId === patchId);
    if (!patch) throw new TrustplaneError("NOT_FOUND", "PATCH_NOT_FOUND", `no config patch ${patchId}`, "revert_of");
    if (patch.revertedBy) throw new TrustplaneError("FAILED_PRECONDITION", "PATCH_REVERTED", `patch ${patchId} was already reverted by ${patch.revertedBy}`, "revert_of");
    return { ...(await this.change(patch.key, patch.previousValue, requestId, patchId)), revertedPatchId: patchId };
  }

  /** One patch: validated, then the new value, its history entry and (for a revert) the mark on
   * the reverted patch are written in one atomic replace, and only then applied live. */
  private async change(key: string, value: string, requestId: string, reverts?: string): Promise<ConfigPatchResult> {
    const spec = this.keys[key];
    if (!spec) throw invalidArgument("key", `${JSON.stringify(key)} is not patchable; allowed: ${Object.keys(this.keys).join(", ")}`, "CONFIG_KEY_NOT_ALLOWED");
    const problem = spec.validate(value);
    if (problem) throw invalidArgument("value", `${key}: ${problem}`, "CONFIG_VALUE_INVALID");
    const patch: Patch = { patchId: `patch_${randomBytes(8).toString("hex")}`, key, previousValue: this.state.values[key] ?? spec.initial, value, requestId };
    const patches = this.state.patches.map((p) => (p.patchId === reverts ? { ...p, revertedBy: patch.patchId } : p));
    // Written first, applied second: a crash in between re-applies the stored value at start.
    await this.persist({ values: { ...this.state.values, [key]: value }, patches: [...patches, patch] });
    spec.apply(value);
    return { patchId: patch.patchId, key, previousValue: patch.previousValue, value, revertedPatchId: "" };
  }
}
