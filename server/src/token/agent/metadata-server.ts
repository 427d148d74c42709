// The GCE-metadata-compatible HTTP endpoint one VM sees at 169.254.169.254:80 (seed 000): the
// /computeMetadata/v1 tree, service-account email/scopes/aliases/token/identity, Metadata-Flavor
// and X-Forwarded-For SSRF checks, ETag, alt=json|text, recursive, wait_for_change, per-VM 429.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { TrustplaneError, type StatusName } from "../../../../sdk/src/errors.js";
import type { Logger } from "../../runtime/logger.js";
import type { CachedToken } from "./token-cache.js";
import { TokenBucket } from "./token-bucket.js";

export interface MetadataAccount {
  email: string;
  /** Canonical (sorted) scopes granted to this VM for the account. */
  scopes: string[];
}

export interface MetadataHealth {
  status: "SERVING" | "SERVING_STALE" | "NOT_SERVING";
  message: string;
  [detail: string]: unknown;
}

/** What the endpoint serves; the VM authorization process implements it. */
export interface MetadataSource {
  instance(): { id: string; hostname: string; name: string; zone: string };
  project(): { projectId: string; numericProjectId: string };
  /** The VM's accounts; the first one is `default`. */
  accounts(): MetadataAccount[];
  /** Subscribes to account additions/removals. */
  onAccountsChanged(listener: () => void): () => void;
  /** `scopes` canonical; empty means the account's whole grant. */
  accessToken(email: string, scopes: string[]): CachedToken | Promise<CachedToken>;
  identityToken(email: string, audience: string, format: "standard" | "full"): CachedToken | Promise<CachedToken>;
  health(): MetadataHealth;
}

export interface MetadataServerOptions {
  source: MetadataSource;
  logger?: Logger;
  /** Per-VM limit over all requests. Default 50/s with a burst of 100. */
  rateLimit?: { ratePerSecond: number; burst: number };
  /** Concurrent wait_for_change requests allowed. Default 32. */
  maxWaiters?: number;
  /** Upper bound (and default) of timeout_sec. Default 300. */
  maxWaitSeconds?: number;
  now?: () => number;
}

export const METADATA_BASE = "/computeMetadata/v1";
const ACCOUNTS_PREFIX = `${METADATA_BASE}/instance/service-accounts/`;
const NO_PARAMS = new URLSearchParams();
export const HEALTH_PATH = "/trustplane/health";

// Headers of every answer, as the GCE metadata server sends them.
const COMMON_HEADERS = {
  "metadata-flavor": "Google",
  server: "Metadata Server for VM",
  "x-xss-protection": "0",
  "x-frame-options": "SAMEORIGIN",
};

type Leaf = string | string[];
interface Dir {
  [name: string]: Node;
}
type Node = Leaf | Dir | typeof TOKEN | typeof IDENTITY;
const COMMON_HEADER_LIST = Object.entries(COMMON_HEADERS).flat();
const TOKEN = Symbol("token");
const IDENTITY = Symbol("identity");

const HTTP_STATUS: Partial<Record<StatusName, number>> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  PERMISSION_DENIED: 403,
  UNAUTHENTICATED: 403,
  RESOURCE_EXHAUSTED: 429,
  FAILED_PRECONDITION: 400,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 503,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class MetadataServer {
  readonly server: Server;
  private readonly source: MetadataSource;
  private readonly logger?: Logger;
  private readonly bucket: TokenBucket;
  private readonly maxWaiters: number;
  private readonly maxWaitMs: number;
  private waiters = 0;
  private readonly tokenBodies = new Map<string, { prefix: string; etag: string }>();
  private readonly closing = new Set<() => void>();
  private readonly unsubscribe: () => void;

  constructor(options: MetadataServerOptions) {
    this.source = options.source;
    this.logger = options.logger;
    const limit = options.rateLimit ?? { ratePerSecond: 50, burst: 100 };
    this.bucket = new TokenBucket({ ...limit, now: options.now });
    this.maxWaiters = options.maxWaiters ?? 32;
    this.maxWaitMs = (options.maxWaitSeconds ?? 300) * 1000;
    this.server = createServer((req, res) => this.handle(req, res));
    // Rendered token bodies of removed accounts are forgotten with them.
    this.unsubscribe = this.source.onAccountsChanged(() => this.tokenBodies.clear());
    // A guest cannot hold many idle sockets open against the endpoint.
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = this.maxWaitMs + 10_000;
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    this.unsubscribe();
    for (const wake of this.closing) wake();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** The request handler; exported through `server` and usable on its own in benchmarks. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    let result: void | Promise<void>;
    try {
      result = this.route(req, res);
    } catch (e) {
      this.fail(req, res, e);
      return;
    }
    if (result) result.catch((e: unknown) => this.fail(req, res, e));
  }

  private route(req: IncomingMessage, res: ServerResponse): void | Promise<void> {
    if (!this.bucket.tryTake()) {
      res.writeHead(429, { ...COMMON_HEADERS, "content-type": "text/plain", "retry-after": String(this.bucket.retryAfterSeconds()) });
      res.end("Too many requests from this VM; slow down and cache tokens until they near expiry.\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "Only GET is supported.");
    // SSRF defence as on GCE: a request that went through a proxy (or an application that
    // forwards client requests) carries X-Forwarded-For and is refused.
    if (req.headers["x-forwarded-for"] !== undefined || req.headers.forwarded !== undefined) {
      throw new HttpError(403, "Request had an X-Forwarded-For header and was refused as a possible server-side request forgery.");
    }
    const url = req.url ?? "/";
    // Absolute-form targets ("GET http://host/...") only come from proxies.
    if (!url.startsWith("/")) throw new HttpError(403, "Proxied requests are refused.");
    const q = url.indexOf("?");
    const rawPath = q < 0 ? url : url.slice(0, q);
    const params = q < 0 ? NO_PARAMS : new URLSearchParams(url.slice(q + 1));
    if (rawPath === HEALTH_PATH) {
      const h = this.source.health();
      this.send(res, h.status === "NOT_SERVING" ? 503 : 200, JSON.stringify(h), "application/json", req.method === "HEAD");
      return;
    }
    // The custom header cannot be set by a browser without a CORS preflight (refused here),
    // nor by most SSRF vectors: the guest's code must mean to talk to the metadata server.
    if (req.headers["metadata-flavor"] !== "Google") {
      throw new HttpError(403, "Missing Metadata-Flavor:Google header.");
    }
    // Hot path first: token and identity requests need neither the path splitter nor the tree.
    if (rawPath.startsWith(ACCOUNTS_PREFIX)) {
      const rest = rawPath.slice(ACCOUNTS_PREFIX.length);
      const slash = rest.indexOf("/");
      if (slash > 0 && rest.indexOf("/", slash + 1) < 0) {
        const leaf = rest.slice(slash + 1);
        if (leaf === "token" || leaf === "identity") {
          const name = decodeSegment(rest.slice(0, slash));
          if (name === undefined) throw new HttpError(404, "Not found.");
          return leaf === "token" ? this.token(req, res, name, params) : this.identity(req, res, name, params);
        }
      }
    }
    const segments = splitPath(rawPath);
    if (segments === undefined) throw new HttpError(404, "Not found.");
    if (segments.length >= 2 && (segments[0] !== "computeMetadata" || segments[1] !== "v1")) throw new HttpError(404, "Not found.");
    if (segments.length < 2) {
      const listing = segments.length === 0 ? "computeMetadata/\n" : segments[0] === "computeMetadata" ? "v1/\n" : undefined;
      if (listing === undefined) throw new HttpError(404, "Not found.");
      this.send(res, 200, listing, "application/text", req.method === "HEAD");
      return;
    }
    return this.tree(req, res, segments.slice(2), params, rawPath.endsWith("/"));
  }

  private account(name: string): MetadataAccount {
    const accounts = this.source.accounts();
    const account = name === "default" ? accounts[0] : accounts.find((a) => a.email === name);
    if (!account) throw new HttpError(404, `Service account ${name.slice(0, 128)} is not on this VM.`);
    return account;
  }

  private token(req: IncomingMessage, res: ServerResponse, name: string, params: URLSearchParams): void | Promise<void> {
    if (params.has("wait_for_change")) throw new HttpError(400, "wait_for_change is not supported for tokens.");
    const account = this.account(name);
    let scopes: string[] = [];
    const requested = params.get("scopes");
    if (requested !== null) {
      const wanted = [...new Set(requested.split(",").map((s) => s.trim()).filter((s) => s.length > 0))].sort();
      const extra = wanted.filter((s) => !account.scopes.includes(s));
      if (extra.length > 0) {
        throw new HttpError(403, `Requested scopes exceed the grant of ${account.email} on this VM: ${extra.join(",").slice(0, 256)}`);
      }
      // The whole grant, however spelled, shares the default cache entry.
      if (wanted.length < account.scopes.length) scopes = wanted;
    }
    const got = this.source.accessToken(account.email, scopes);
    if (got instanceof Promise) return got.then((t) => this.sendToken(req, res, t));
    this.sendToken(req, res, got);
  }

  private sendToken(req: IncomingMessage, res: ServerResponse, t: CachedToken): void {
    // Rendering pieces are kept per token: only expires_in changes between two answers.
    let memo = this.tokenBodies.get(t.token);
    if (!memo) {
      if (this.tokenBodies.size >= 256) this.tokenBodies.clear();
      memo = { prefix: `{"access_token":${JSON.stringify(t.token)},"expires_in":`, etag: etagOf(t.token) };
      this.tokenBodies.set(t.token, memo);
    }
    const expiresIn = Math.max(0, Math.floor((t.expiresAtMs - Date.now()) / 1000));
    const body = `${memo.prefix}${expiresIn},"token_type":"Bearer"}`;
    this.send(res, 200, body, "application/json", req.method === "HEAD", { "cache-control": "no-store", etag: memo.etag });
  }

  private identity(req: IncomingMessage, res: ServerResponse, name: string, params: URLSearchParams): void | Promise<void> {
    if (params.has("wait_for_change")) throw new HttpError(400, "wait_for_change is not supported for identity tokens.");
    const account = this.account(name);
    const audience = params.get("audience");
    if (!audience) throw new HttpError(400, "non-empty audience parameter required");
    const format = params.get("format") ?? "standard";
    if (format !== "standard" && format !== "full") throw new HttpError(400, "format must be standard or full");
    const got = this.source.identityToken(account.email, audience, format);
    const send = (t: CachedToken) => this.send(res, 200, t.token, "text/plain", req.method === "HEAD", { "cache-control": "no-store" });
    if (got instanceof Promise) return got.then(send);
    send(got);
  }

  private async tree(req: IncomingMessage, res: ServerResponse, path: string[], params: URLSearchParams, trailingSlash: boolean): Promise<void> {
    const recursive = params.get("recursive") === "true";
    const altParam = params.get("alt");
    if (altParam !== null && altParam !== "json" && altParam !== "text") throw new HttpError(400, "alt must be json or text");
    const alt = (altParam ?? (recursive ? "json" : "text")) as "json" | "text";
    const render = () => {
      const node = lookup(this.buildTree(), path);
      if (node === undefined || typeof node === "symbol") throw new HttpError(404, "Not found.");
      // Leaves have no trailing slash; a directory asked for without one (gcp-metadata's
      // detection ping asks for "instance") is answered as the directory.
      if (!isDir(node) && trailingSlash) throw new HttpError(404, "Not found.");
      return renderNode(node, recursive, alt);
    };
    let current = render();
    if (params.get("wait_for_change") === "true") {
      const timeoutParam = params.get("timeout_sec");
      let timeoutMs = this.maxWaitMs;
      if (timeoutParam !== null) {
        const n = Number(timeoutParam);
        if (!Number.isInteger(n) || n <= 0) throw new HttpError(400, "timeout_sec must be a positive whole number");
        timeoutMs = Math.min(n * 1000, this.maxWaitMs);
      }
      const baseline = params.get("last_etag") ?? current.etag;
      if (current.etag === baseline) {
        if (this.waiters >= this.maxWaiters) throw new HttpError(429, "Too many concurrent wait_for_change requests from this VM.");
        this.waiters++;
        try {
          current = await this.waitForChange(res, baseline, timeoutMs, render);
        } finally {
          this.waiters--;
        }
        if (res.destroyed) return;
      }
    }
    this.send(res, 200, current.body, alt === "json" ? "application/json" : "application/text", req.method === "HEAD", { etag: current.etag });
  }

  /** Resolves with the new rendering once its ETag differs from `baseline`, or at the timeout. */
  private waitForChange(res: ServerResponse, baseline: string, timeoutMs: number, render: () => Rendered): Promise<Rendered> {
    return new Promise<Rendered>((resolve, reject) => {
      let done = false;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        unsubscribe();
        res.off("close", onClose);
        this.closing.delete(onClose);
        fn();
      };
      const settleWithCurrent = () => {
        try {
          const r = render();
          finish(() => resolve(r));
        } catch (e) {
          finish(() => reject(e));
        }
      };
      const onChange = () => {
        let r: Rendered;
        try {
          r = render();
        } catch (e) {
          finish(() => reject(e));
          return;
        }
        if (r.etag !== baseline) finish(() => resolve(r));
      };
      const onClose = () => settleWithCurrent();
      const timer = setTimeout(settleWithCurrent, timeoutMs);
      const unsubscribe = this.source.onAccountsChanged(onChange);
      res.on("close", onClose);
      this.closing.add(onClose);
    });
  }

  private buildTree(): Dir {
    const instance = this.source.instance();
    const project = this.source.project();
    const accounts = this.source.accounts();
    const serviceAccounts: Dir = {};
    accounts.forEach((a, i) => {
      const node: Dir = {
        aliases: i === 0 ? ["default"] : [],
        email: a.email,
        identity: IDENTITY,
        scopes: a.scopes,
        token: TOKEN,
      };
      serviceAccounts[a.email] = node;
      if (i === 0) serviceAccounts.default = node;
    });
    return {
      instance: { hostname: instance.hostname, id: instance.id, name: instance.name, "service-accounts": serviceAccounts, zone: instance.zone },
      project: { "numeric-project-id": project.numericProjectId, "project-id": project.projectId },
    };
  }

  private send(res: ServerResponse, status: number, body: string, contentType: string, headOnly: boolean, extra: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    // A flat header list skips node:http's per-key object walk on the hot path.
    const headers: string[] = [...COMMON_HEADER_LIST, "content-type", contentType, "content-length", String(Buffer.byteLength(body))];
    if (extra.etag === undefined) headers.push("etag", etagOf(body));
    for (const key in extra) headers.push(key, extra[key]!);
    res.writeHead(status, headers);
    res.end(headOnly ? undefined : body);
  }

  private fail(req: IncomingMessage, res: ServerResponse, e: unknown): void {
    let status = 500;
    let message = "Internal error.";
    if (e instanceof HttpError) {
      status = e.status;
      message = e.message;
    } else if (e instanceof TrustplaneError) {
      status = HTTP_STATUS[e.status] ?? 500;
      message = e.message;
      this.logger?.warn({ reason: e.reason, status, path: (req.url ?? "").split("?")[0] }, "metadata request refused");
    } else {
      this.logger?.error({ err: e instanceof Error ? e.message : String(e), path: (req.url ?? "").split("?")[0] }, "metadata request failed");
    }
    this.send(res, status, `${message}\n`, "text/plain", req.method === "HEAD", status === 405 ? { allow: "GET, HEAD" } : {});
  }
}

interface Rendered {
  body: string;
  etag: string;
}

function isDir(node: Node): node is Dir {
  return typeof node === "object" && !Array.isArray(node);
}

/** Decodes one path segment; undefined for anything that could alias another path. */
function decodeSegment(p: string): string | undefined {
  let d = p;
  if (p.includes("%")) {
    try {
      d = decodeURIComponent(p);
    } catch {
      return undefined;
    }
  }
  if (d === "" || d === "." || d === ".." || d.includes("/")) return undefined;
  return d;
}

function splitPath(rawPath: string): string[] | undefined {
  const parts = rawPath.split("/").filter((s, i, all) => !(s === "" && (i === 0 || i === all.length - 1)));
  const out: string[] = [];
  for (const p of parts) {
    const d = decodeSegment(p);
    if (d === undefined) return undefined;
    out.push(d);
  }
  return out;
}

function lookup(root: Dir, path: string[]): Node | undefined {
  let node: Node = root;
  for (const seg of path) {
    if (!isDir(node) || !Object.hasOwn(node, seg)) return undefined;
    node = node[seg]!;
  }
  return node;
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The value of a node as GCE's recursive JSON: camelCase keys, no token endpoints. */
function toJson(node: Node): unknown {
  if (typeof node === "symbol") return undefined;
  if (!isDir(node)) return node;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(node).sort()) {
    const v = toJson(node[key]!);
    if (v !== undefined) out[camel(key)] = v;
  }
  return out;
}

function flattenText(value: unknown, prefix: string, lines: string[]): void {
  if (Array.isArray(value)) value.forEach((v, i) => flattenText(v, `${prefix}/${i}`, lines));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) flattenText(v, prefix ? `${prefix}/${k}` : k, lines);
  } else lines.push(`${prefix} ${String(value)}`);
}

function renderNode(node: Node, recursive: boolean, alt: "json" | "text"): Rendered {
  let value: unknown;
  let body: string;
  if (isDir(node) && !recursive) {
    const entries = Object.keys(node)
      .sort()
      .map((k) => (isDir(node[k]!) ? `${k}/` : k));
    value = entries;
    body = alt === "json" ? JSON.stringify(entries) : entries.map((e) => `${e}\n`).join("");
  } else {
    value = toJson(node);
    if (alt === "json") body = JSON.stringify(value);
    else if (typeof value === "string") body = value;
    else if (Array.isArray(value)) body = value.map((v) => `${String(v)}\n`).join("");
    else {
      const lines: string[] = [];
      flattenText(value, "", lines);
      body = lines.map((l) => `${l}\n`).join("");
    }
  }
  // The ETag follows the value, not its rendering, so last_etag works across alt=json|text.
  return { body, etag: etagOf(JSON.stringify(value)) };
}

function etagOf(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 16);
}
