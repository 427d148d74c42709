// Every migration, in order. An area adds its tables by appending a file here with the next
// id (e.g. `002-vm.ts` exporting a Migration); shipped migrations are never edited.
import { foundation } from "./001-foundation.js";
import { token } from "./002-token.js";
import { vm } from "./003-vm.js";
import { job } from "./005-job.js";
import type { Migration } from "./migration.js";
import { vmHostInventory } from "../../../vm/manager/vm-migration.js";

export const MIGRATIONS: readonly Migration[] = [foundation, token, vm, job, vmHostInventory];
