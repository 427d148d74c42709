// Every benchmark `npm run bench` knows, by area. Each area adds its list here.
import type { Benchmark } from "./harness.js";
import { AUTH_BENCHMARKS } from "./auth/auth.bench.js";
import { TOKEN_BENCHMARKS } from "./token/token.bench.js";
import { JOB_BENCHMARKS } from "./job/job.bench.js";
import { PRIVILEGED_BENCHMARKS } from "./privileged/privileged.bench.js";
import { VM_BENCHMARKS } from "./vm/sandbox.bench.js";
import { VM_SCHEDULER_BENCHMARKS } from "./vm/scheduler.bench.js";
import { QEMU_BENCHMARKS } from "./vm/qemu.bench.js";
import { DEPLOY_BENCHMARKS } from "./deploy/deploy.bench.js";

export const BENCHMARKS: Benchmark[] = [...AUTH_BENCHMARKS, ...TOKEN_BENCHMARKS, ...VM_BENCHMARKS, ...VM_SCHEDULER_BENCHMARKS, ...QEMU_BENCHMARKS, ...PRIVILEGED_BENCHMARKS, ...DEPLOY_BENCHMARKS, ...JOB_BENCHMARKS];
