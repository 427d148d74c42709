#!/usr/bin/env node
// `buf breaking` against main: v1 APIs may only grow. Skips when main has no proto/ yet
// (the first commit that introduces the APIs has nothing to compare against).
import { execFileSync } from "node:child_process";

const against = process.env.TRUSTPLANE_BREAKING_AGAINST ?? ".git#branch=main";
try {
  execFileSync("git", ["cat-file", "-e", "main:proto"], { stdio: "ignore" });
} catch {
  console.log("buf breaking: main has no proto/ yet, nothing to compare");
  process.exit(0);
}
execFileSync("npx", ["--no-install", "buf", "breaking", "--against", `${against},subdir=proto`], { stdio: "inherit" });
console.log("buf breaking: no breaking changes against main");
