// Authorization after authentication: a principal's rules over method globs.
// Implements "then the principal's policy for this method": a matching DENY beats any
// ALLOW, nothing matches means deny, and the "admin" role allows what no DENY names.
import type { Caller } from "./caller.js";

export interface PolicyEngine {
  authorize(caller: Caller, method: string): Promise<boolean>;
}

export interface PolicyRuleSpec {
  /** Full method paths, or prefixes ending in "*" ("/trustplane.vm.v1.VmService/*", "*"). */
  methods: string[];
  effect: "allow" | "deny";
}

export interface PrincipalPolicy {
  roles: string[];
  rules: PolicyRuleSpec[];
}

export const ADMIN_ROLE = "admin";

export function methodMatches(pattern: string, method: string): boolean {
  return pattern.endsWith("*") ? method.startsWith(pattern.slice(0, -1)) : pattern === method;
}

export class RulePolicyEngine implements PolicyEngine {
  constructor(private readonly load: (principal: string) => Promise<PrincipalPolicy | undefined>) {}

  async authorize(caller: Caller, method: string): Promise<boolean> {
    const policy = await this.load(caller.principal);
    if (!policy) return false;
    let allowed = policy.roles.includes(ADMIN_ROLE);
    for (const rule of policy.rules) {
      if (!rule.methods.some((p) => methodMatches(p, method))) continue;
      if (rule.effect === "deny") return false;
      if (rule.effect === "allow") allowed = true;
    }
    return allowed;
  }
}
