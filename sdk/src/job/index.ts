// Public surface of the secure-jobs SDK (seed 003): encrypt and upload data, open a
// proof-of-possession session, run WebAssembly jobs, and hold the DEK behind one-time job
// keys with a durable ledger. The module ABI is documented in ./ABI.md.
export { encryptToStorage, encryptToFile, uploadFile, type EncryptToStorageOptions, type PlaintextSource, type TransferProgress } from "./encrypt-to-storage.js";
export { openSession, JobSession, type OpenSessionOptions } from "./job-session.js";
export { runJob, downloadObject, type DataRef, type JobResult, type RunJobOptions } from "./run-job.js";
export { KeyHolder, type IssueOtkInput, type KeyAnswer, type KeyHolderOptions, type KeyPolicy, type KeyRequestInfo } from "./key-holder.js";
export { FileOtkLedger, MemoryOtkLedger, type OtkBinding, type OtkEntry, type OtkLedger, type OtkUse } from "./otk-ledger.js";
export { dekReleaseInfo, sessionChallengeInfo, sessionProofMessage } from "./job-bindings.js";
export { attestJobVm, verifyJobVmAttestation, JOB_VM_ATTESTATION_TYPE, JobVmAttestation } from "./job-vm-attestation.js";
export { pinnedCaKeys } from "./pinned-ca-keys.js";
export { FrameOpener, FrameSealer, type SessionDirection } from "./session-frames.js";
export { deriveSessionKeys, type HandshakeTranscript, type SessionKeys } from "./session-keys.js";
