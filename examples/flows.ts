// The flows `npm run demo` tours, in order. Each area adds its flow here when it lands.
import { signedCallsFlow } from "./signed-calls.js";
import { vmLifecycleFlow } from "./vm-lifecycle.js";
import { vmTokenFlow } from "./vm-token.js";
import { privilegedCarriedFlow, privilegedDirectFlow, privilegedEncryptedFlow } from "./privileged-flows.js";
import type { ExampleFlow } from "./tour-context.js";
import { secureJobWordFrequencyFlow } from "./secure-job-word-frequency.js";
import { secureJobCsvAggregateFlow } from "./secure-job-csv-aggregate.js";
import { deployWarFlow } from "./deploy-war.js";
import { deployNodeAppFlow } from "./deploy-node-app.js";

export const FLOWS: ExampleFlow[] = [signedCallsFlow, vmLifecycleFlow, vmTokenFlow, privilegedDirectFlow, privilegedCarriedFlow, privilegedEncryptedFlow, secureJobWordFrequencyFlow, secureJobCsvAggregateFlow, deployWarFlow, deployNodeAppFlow];
