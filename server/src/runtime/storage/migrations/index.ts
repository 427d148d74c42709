// Every migration, in ascending id order, shared by SQLite and PostgreSQL. To add tables: create
// `NNN-<area>.ts` beside this file exporting a Migration (id = its reserved number, types from
// the `t` column map, see 001-foundation.ts), import it here and append it to the list. Ids are
// reserved per area (2 token, 3 vm, 4 deploy, 5 job, 6 privileged, 7 vm host inventory, 8 vm list columns,
// 9 token allowed scopes); a
// later change to an area is a new migration with the next free id, never an edit of a shipped
// one. openDatabase refuses a list whose ids do not increase, and a database whose recorded
// id carries a different name.
import { foundation } from "./001-foundation.js";
import { token } from "./002-token.js";
import { vm } from "./003-vm.js";
import { deploy } from "./004-deploy.js";
import { job } from "./005-job.js";
import type { Migration } from "./migration.js";
import { vmHostInventory, vmListColumns } from "../../../vm/manager/vm-migration.js";
import { privileged } from "../../../privileged/privileged-migration.js";
import { tokenAllowedScopesAndKeyActivation } from "../../../token/store/token-allowed-scopes-migration.js";

export const MIGRATIONS: readonly Migration[] = [foundation, token, vm, deploy, job, privileged, vmHostInventory, vmListColumns, tokenAllowedScopesAndKeyActivation];
