// The `trustplane` command line: one dispatcher over small command modules. Errors print
// what was wrong with the stable reason code, never a stack trace, and set the exit code.
import { TrustplaneError } from "../../../sdk/src/errors.js";
import type { Command } from "./cli-context.js";
import { agentCommand, devCommand, serverCommand } from "./commands/process-commands.js";
import { auditCommand, echoCommand, hostCommand, keysCommand, principalCommand, whoamiCommand } from "./commands/identity-commands.js";
import { serviceAccountCommand, tokenCommand } from "../token/cli/token-commands.js";
import { jobCommand } from "../job/job-command.js";
import { hypervisorsCommand, vmCommand } from "../vm/cli/vm-command.js";
import { privilegedCommand } from "../privileged/cli/privileged-command.js";
import { deployCommand } from "../deploy/cli/deploy-command.js";

export const COMMANDS: Command[] = [devCommand, serverCommand, agentCommand, keysCommand, principalCommand, hostCommand, auditCommand, echoCommand, whoamiCommand, serviceAccountCommand, tokenCommand, vmCommand, hypervisorsCommand, privilegedCommand, deployCommand, jobCommand];

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "trustplane — security-critical control paths for cloud platforms",
    "",
    "usage: trustplane <command> [options]   (trustplane <command> --help for details)",
    "",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  try {
    await command.run(rest);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof TrustplaneError) {
      process.stderr.write(`error: ${e.message} [${e.status} ${e.reason}]\n`);
      return e.status === "INVALID_ARGUMENT" ? 2 : 1;
    }
    process.stderr.write(`error: ${(e as Error).message}\n`);
    return 1;
  }
}

const isEntry = process.argv[1] !== undefined && /cli[/\\]main\.ts$/.test(process.argv[1]);
if (isEntry) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
