#!/usr/bin/env node
// Regenerates sdk/src/gen from proto/ with buf + ts-proto (see buf.gen.yaml).
// `--check` fails when the committed tree differs from a fresh generation (used by CI).
import { execFileSync } from "node:child_process";

const check = process.argv.includes("--check");
const run = (cmd, args) => execFileSync(cmd, args, { stdio: "inherit" });

run("npx", ["--no-install", "buf", "lint"]);
run("npx", ["--no-install", "buf", "generate"]);
if (check) {
  const status = execFileSync("git", ["status", "--porcelain", "--", "sdk/src/gen"], { encoding: "utf8" });
  if (status.trim() !== "") {
    console.error("generated code is stale; run `npm run generate` and commit:\n" + status);
    process.exit(1);
  }
  console.log("generated code is up to date");
}
