// Service accounts and the services they reach: each account has an ACL of the principals who
// may act as it (only they may launch a VM with it); each service owns its scopes and the
// audience its tokens carry. Implements "Service accounts with an ACL ..." of seed 000.
import { TrustplaneError, invalidArgument } from "../../../../sdk/src/errors.js";

/** A service that accepts our tokens: its scopes and the `aud` its tokens carry. */
export interface ServiceDefinition {
  name: string;
  audience: string;
  scopes: string[];
}

export interface ServiceAccount {
  /** The account's identity, e.g. `builder@acme.trustplane`; `sub` of its tokens. */
  email: string;
  displayName: string;
  /** Principals (user ids from the verified signed request) allowed to act as this account. */
  actors: string[];
  /** Scopes VMs may be granted with the account (canonical); empty: any declared scope. */
  allowedScopes: string[];
  createdAtMs: number;
}

/** Storage behind the registry; the lead backs it with the repository layer. */
export interface ServiceAccountStore {
  getAccount(email: string): Promise<ServiceAccount | undefined>;
  putAccount(account: ServiceAccount): Promise<void>;
  deleteAccount(email: string): Promise<boolean>;
  listAccounts(): Promise<ServiceAccount[]>;
  getService(name: string): Promise<ServiceDefinition | undefined>;
  putService(service: ServiceDefinition): Promise<void>;
  listServices(): Promise<ServiceDefinition[]>;
}

export class InMemoryServiceAccountStore implements ServiceAccountStore {
  private readonly accounts = new Map<string, ServiceAccount>();
  private readonly services = new Map<string, ServiceDefinition>();

  async getAccount(email: string) {
    const a = this.accounts.get(email);
    return a ? structuredClone(a) : undefined;
  }
  async putAccount(account: ServiceAccount) {
    this.accounts.set(account.email, structuredClone(account));
  }
  async deleteAccount(email: string) {
    return this.accounts.delete(email);
  }
  async listAccounts() {
    return [...this.accounts.values()].map((a) => structuredClone(a));
  }
  async getService(name: string) {
    const s = this.services.get(name);
    return s ? structuredClone(s) : undefined;
  }
  async putService(service: ServiceDefinition) {
    this.services.set(service.name, structuredClone(service));
  }
  async listServices() {
    return [...this.services.values()].map((s) => structuredClone(s));
  }
}

// RFC 6749 scope-token (%x21 / %x23-5B / %x5D-7E) minus ",", which separates scopes in the
// metadata server's `?scopes=a,b`.
const SCOPE_TOKEN = /^[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]{1,256}$/;
// Same shape as GCE service account emails; nothing that could break a URL path segment.
const ACCOUNT_EMAIL = /^[a-z0-9][a-z0-9._-]{0,62}@[a-z0-9][a-z0-9.-]{0,190}$/;

export function isValidScope(scope: string): boolean {
  return SCOPE_TOKEN.test(scope);
}

/** Validates a scope list and returns it sorted and de-duplicated (the canonical scope set). */
export function canonicalScopes(scopes: readonly string[], field = "scopes"): string[] {
  if (scopes.length === 0) throw invalidArgument(field, "at least one scope is required", "SCOPES_EMPTY");
  for (const s of scopes) {
    if (!isValidScope(s)) {
      throw invalidArgument(field, `"${s.slice(0, 64)}" is not a valid scope (printable ASCII, no spaces, commas, quotes or backslashes)`, "SCOPE_INVALID");
    }
  }
  return [...new Set(scopes)].sort();
}

export interface ServiceAccountRegistryOptions {
  /**
   * How long the mint path may reuse what it read (the service catalogue, an account): 0
   * (default) reads storage every time. Writes through this registry drop what it cached;
   * writes on another replica are seen within this time.
   */
  cacheTtlMs?: number;
  now?: () => number;
}

export class ServiceAccountRegistry {
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private services?: { value: Promise<ServiceDefinition[]>; until: number };
  private readonly accountCache = new Map<string, { value: Promise<ServiceAccount | undefined>; until: number }>();

  constructor(
    private readonly store: ServiceAccountStore,
    options: ServiceAccountRegistryOptions = {},
  ) {
    this.cacheTtlMs = options.cacheTtlMs ?? 0;
    this.now = options.now ?? Date.now;
  }

  private listServicesCached(): Promise<ServiceDefinition[]> {
    if (this.cacheTtlMs <= 0) return this.store.listServices();
    const t = this.now();
    if (!this.services || this.services.until <= t) {
      const value = this.store.listServices();
      this.services = { value, until: t + this.cacheTtlMs };
      value.catch(() => (this.services = undefined));
    }
    return this.services.value;
  }

  private getAccountCached(email: string): Promise<ServiceAccount | undefined> {
    if (this.cacheTtlMs <= 0) return this.store.getAccount(email);
    const t = this.now();
    const hit = this.accountCache.get(email);
    if (hit && hit.until > t) return hit.value;
    if (this.accountCache.size >= 10_000) this.accountCache.clear();
    const value = this.store.getAccount(email);
    this.accountCache.set(email, { value, until: t + this.cacheTtlMs });
    value.catch(() => this.accountCache.delete(email));
    return value;
  }

  private forget(email?: string): void {
    this.services = undefined;
    if (email === undefined) this.accountCache.clear();
    else this.accountCache.delete(email);
  }

  async defineService(service: ServiceDefinition): Promise<ServiceDefinition> {
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(service.name)) {
      throw invalidArgument("name", "service names are lowercase letters, digits and dashes", "SERVICE_NAME_INVALID");
    }
    if (service.audience.length === 0) throw invalidArgument("audience", "a service needs an audience", "AUDIENCE_EMPTY");
    const scopes = canonicalScopes(service.scopes);
    // A scope names exactly one service, so a token's audience follows from its scopes.
    for (const other of await this.store.listServices()) {
      if (other.name === service.name) continue;
      const clash = other.scopes.find((s) => scopes.includes(s));
      if (clash) {
        throw new TrustplaneError("ALREADY_EXISTS", "SCOPE_TAKEN", `scope "${clash}" already belongs to service "${other.name}"`, "scopes");
      }
    }
    const def = { name: service.name, audience: service.audience, scopes };
    await this.store.putService(def);
    this.forget();
    return def;
  }

  async createAccount(input: { email: string; displayName?: string; actors?: string[]; allowedScopes?: readonly string[] }, nowMs = Date.now()): Promise<ServiceAccount> {
    if (!ACCOUNT_EMAIL.test(input.email)) {
      throw invalidArgument("email", "use a lowercase address like name@project.trustplane", "ACCOUNT_EMAIL_INVALID");
    }
    const allowedScopes = input.allowedScopes && input.allowedScopes.length > 0 ? canonicalScopes(input.allowedScopes, "allowed_scopes") : [];
    // Each allowed scope must belong to a declared service, or no VM could ever be granted it.
    if (allowedScopes.length > 0) await this.audiencesForScopes(allowedScopes, "allowed_scopes");
    if (await this.store.getAccount(input.email)) {
      throw new TrustplaneError("ALREADY_EXISTS", "ACCOUNT_EXISTS", `service account ${input.email} already exists`, "email");
    }
    const account: ServiceAccount = {
      email: input.email,
      displayName: input.displayName ?? input.email,
      actors: [...new Set(input.actors ?? [])].sort(),
      allowedScopes,
      createdAtMs: nowMs,
    };
    await this.store.putAccount(account);
    this.forget(account.email);
    return account;
  }

  /** The account as stored now (for changes and ACL decisions, never cached). */
  private async fresh(email: string): Promise<ServiceAccount> {
    const account = await this.store.getAccount(email);
    if (!account) throw new TrustplaneError("NOT_FOUND", "ACCOUNT_NOT_FOUND", `no service account ${email}`, "service_account");
    return account;
  }

  /** The account (the mint path may see it up to cacheTtlMs late; do not mutate it). */
  async get(email: string): Promise<ServiceAccount> {
    const account = await this.getAccountCached(email);
    if (!account) throw new TrustplaneError("NOT_FOUND", "ACCOUNT_NOT_FOUND", `no service account ${email}`, "service_account");
    return account;
  }

  async list(): Promise<ServiceAccount[]> {
    return (await this.store.listAccounts()).sort((a, b) => a.email.localeCompare(b.email));
  }

  async delete(email: string): Promise<void> {
    this.forget(email);
    if (!(await this.store.deleteAccount(email))) {
      throw new TrustplaneError("NOT_FOUND", "ACCOUNT_NOT_FOUND", `no service account ${email}`, "service_account");
    }
  }

  /** Lets `principal` act as the account (launch VMs with it). */
  async grant(email: string, principal: string): Promise<ServiceAccount> {
    if (principal.length === 0) throw invalidArgument("principal", "must not be empty");
    const account = await this.fresh(email);
    account.actors = [...new Set([...account.actors, principal])].sort();
    await this.store.putAccount(account);
    this.forget(email);
    return account;
  }

  async revokeGrant(email: string, principal: string): Promise<ServiceAccount> {
    const account = await this.fresh(email);
    account.actors = account.actors.filter((a) => a !== principal);
    await this.store.putAccount(account);
    this.forget(email);
    return account;
  }

  async canActAs(principal: string, email: string): Promise<boolean> {
    const account = await this.store.getAccount(email);
    return account !== undefined && account.actors.includes(principal);
  }

  /** Throws PERMISSION_DENIED NOT_ON_ACL unless `principal` may act as the account. */
  async requireActAs(principal: string, email: string): Promise<ServiceAccount> {
    const account = await this.store.getAccount(email);
    // Same answer for "no such account" and "not allowed", so the ACL check is no oracle.
    if (!account || !account.actors.includes(principal)) {
      throw new TrustplaneError(
        "PERMISSION_DENIED",
        "NOT_ON_ACL",
        `principal ${principal} may not act as service account ${email}; ask an owner to run "trustplane sa grant"`,
        "service_account",
      );
    }
    return account;
  }

  /**
   * Refuses scopes outside the account's allowed_scopes (PERMISSION_DENIED SCOPE_NOT_ALLOWED):
   * the ACL says who may use the account, this says for what.
   */
  requireAllowedScopes(account: ServiceAccount, scopes: readonly string[]): void {
    if (account.allowedScopes.length === 0) return;
    const extra = scopes.filter((s) => !account.allowedScopes.includes(s));
    if (extra.length > 0) {
      throw new TrustplaneError(
        "PERMISSION_DENIED",
        "SCOPE_NOT_ALLOWED",
        `service account ${account.email} may not be granted ${extra.join(", ")}; it allows ${account.allowedScopes.join(", ")}`,
        "scopes",
      );
    }
  }

  /** Checks every scope is owned by some service and returns the audiences they imply. */
  async audiencesForScopes(scopes: readonly string[], field = "scopes"): Promise<string[]> {
    const services = await this.listServicesCached();
    const audiences = new Set<string>();
    for (const scope of scopes) {
      const service = services.find((s) => s.scopes.includes(scope));
      if (!service) {
        throw invalidArgument(field, `scope "${scope.slice(0, 64)}" belongs to no service; define it with the service first`, "SCOPE_UNKNOWN");
      }
      audiences.add(service.audience);
    }
    return [...audiences].sort();
  }
}
