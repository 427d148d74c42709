// The job session as a secure channel (seed 003): the handshake binds the session to the key
// that signs the call (sign variant: the hello's key must be it; both variants: the session
// keys are derived with its id), and every message after it is sealed in sequence in both
// directions — a tampered, replayed, reordered, reflected or unsealed message ends the session.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, type SigningKey } from "../../sdk/src/auth/index.js";
import { createClient } from "../../sdk/src/client/create-client.js";
import { x25519Agree } from "../../sdk/src/envelope/dhkem-x25519.js";
import { openAndExport } from "../../sdk/src/envelope/hpke.js";
import { generateX25519KeyPair } from "../../sdk/src/envelope/x25519-keys.js";
import { ChallengeVariant, JobServiceService, OpenSessionRequest, OpenSessionResponse, type SessionFrame } from "../../sdk/src/gen/trustplane/job/v1/job.js";
import { sessionChallengeInfo, sessionProofMessage } from "../../sdk/src/job/job-bindings.js";
import { FrameOpener, FrameSealer } from "../../sdk/src/job/session-frames.js";
import { SESSION_EXPORTER_CONTEXT, confirmationMac, deriveSessionKeys, type HandshakeTranscript } from "../../sdk/src/job/session-keys.js";
import { startJobTestEnv, type JobTestEnv, type JobUser } from "./job-test-env.js";

let t: JobTestEnv;
let alice: JobUser;

beforeAll(async () => {
  t = await startJobTestEnv();
  alice = await t.user("alice");
}, 30_000);
afterAll(async () => t?.stop());

interface Tweaks {
  /** The JWK named in a sign-variant hello (default: the call key's). */
  helloKey?: SigningKey;
  /** Who signs the sign-variant proof (default: the hello key). */
  prover?: SigningKey;
  /** Replace the encrypt-variant proof. */
  proof?: Uint8Array;
  /** The call key id the client derives its keys with (default: its own). */
  derivedForKeyId?: string;
}

/** A client handshake done by hand, so a test can deviate from it at any step. */
async function handshake(variant: "sign" | "encrypt", tw: Tweaks = {}) {
  const client = createClient(JobServiceService, t.address, { key: alice.key });
  const sealing = generateX25519KeyPair();
  const helloKey = tw.helloKey ?? alice.key;
  const stream = client.openSession({
    hello:
      variant === "encrypt"
        ? { variant: ChallengeVariant.CHALLENGE_VARIANT_ENCRYPT_TO_CLIENT_KEY, clientSealingKey: sealing.publicKey }
        : { variant: ChallengeVariant.CHALLENGE_VARIANT_SIGN_BY_CLIENT_KEY, clientSigningJwk: JSON.stringify(helloKey.publicJwk) },
  });
  const it = stream[Symbol.asyncIterator]();
  const close = () => {
    stream.cancel();
    client.close();
  };
  try {
    const c = (await it.next()).value.challenge!;
    const transcript: HandshakeTranscript = {
      sessionId: c.sessionId,
      variant: c.variant,
      callKeyId: tw.derivedForKeyId ?? alice.key.keyId,
      clientSealingKey: variant === "encrypt" ? sealing.publicKey : new Uint8Array(0),
      clientSigningJwk: variant === "encrypt" ? "" : JSON.stringify(helloKey.publicJwk),
      enc: c.enc,
      ciphertext: c.ciphertext,
      nonce: c.nonce,
      serviceEphemeralKey: c.serviceEphemeralKey,
      clientEphemeralKey: new Uint8Array(0),
    };
    let proof: Uint8Array;
    let secret: Uint8Array;
    if (variant === "encrypt") {
      const o = openAndExport(sealing.privateKey, c.enc, c.ciphertext, { info: sessionChallengeInfo(c.sessionId) }, SESSION_EXPORTER_CONTEXT, 32);
      proof = tw.proof ?? o.plaintext;
      secret = o.exported;
    } else {
      const eph = generateX25519KeyPair();
      transcript.clientEphemeralKey = eph.publicKey;
      proof = (tw.prover ?? helloKey).sign(sessionProofMessage(c.sessionId, c.nonce, c.serviceEphemeralKey, eph.publicKey));
      secret = x25519Agree(eph.privateKey, c.serviceEphemeralKey);
    }
    const keys = deriveSessionKeys(secret, transcript);
    stream.send({ challengeResponse: { proof, clientEphemeralKey: transcript.clientEphemeralKey, confirmation: confirmationMac(keys) } });
    const sealer = new FrameSealer(keys.clientToService, c.sessionId, "client-to-service");
    const opener = new FrameOpener(keys.serviceToClient, c.sessionId, "service-to-client");
    const second = await it.next();
    const established = OpenSessionResponse.decode(opener.open(second.value.sealed)).established!;
    const encode = (m: Partial<OpenSessionRequest>) => OpenSessionRequest.encode(OpenSessionRequest.fromPartial(m)).finish();
    return { stream, it, sealer, opener, established, encode, close, keys };
  } catch (e) {
    close();
    throw e;
  }
}

/** What the service does with the stream after `send`: the stream's error, if any. */
async function outcome(h: Awaited<ReturnType<typeof handshake>>, send: () => void) {
  send();
  try {
    for (;;) {
      const n = await Promise.race([h.it.next(), new Promise<"open">((r) => setTimeout(() => r("open"), 1500))]);
      if (n === "open") return "still open";
      if (n.done) return "ended";
    }
  } catch (e) {
    return e as { status: string; reason: string };
  } finally {
    h.close();
  }
}

const denial = (jobId: string, seq: number) => ({ keyDenied: { jobId, requestSeq: seq, reason: "TEST" } });

describe("the session handshake", () => {
  it("establishes sealed sessions with both variants", async () => {
    for (const v of ["sign", "encrypt"] as const) {
      const h = await handshake(v);
      expect(h.established.sessionId).toMatch(/^ses_/);
      // A well-formed sealed answer keeps the session open.
      expect(await outcome(h, () => h.stream.send({ sealed: h.sealer.seal(h.encode(denial("job_x", 1))) }))).toBe("still open");
    }
  }, 30_000);

  it("refuses a proof by another key, a guessed secret, a hello key that is not the call key, and keys derived for another call key", async () => {
    const other = generateSigningKey("Ed25519");
    await expect(handshake("sign", { prover: other })).rejects.toMatchObject({ status: "UNAUTHENTICATED", reason: "SESSION_PROOF_INVALID" });
    await expect(handshake("encrypt", { proof: new Uint8Array(32) })).rejects.toMatchObject({ status: "UNAUTHENTICATED", reason: "SESSION_PROOF_INVALID" });
    // Proving possession of some key is not enough: it must be the key signing the call.
    await expect(handshake("sign", { helloKey: other })).rejects.toMatchObject({ status: "PERMISSION_DENIED", reason: "SESSION_KEY_NOT_CALLER" });
    // A relay that opens the session with its own call key cannot use the client's proof.
    for (const v of ["sign", "encrypt"] as const) {
      await expect(handshake(v, { derivedForKeyId: other.keyId })).rejects.toMatchObject({ status: "UNAUTHENTICATED", reason: "SESSION_PROOF_INVALID" });
    }
  }, 30_000);
});

describe("every session message after the handshake is sealed and in sequence", () => {
  it("a tampered frame ends the session", async () => {
    const h = await handshake("sign");
    const f = h.sealer.seal(h.encode(denial("job_x", 1)));
    f.ciphertext[3]! ^= 0x40;
    expect(await outcome(h, () => h.stream.send({ sealed: f }))).toMatchObject({ status: "UNAUTHENTICATED", reason: "SESSION_FRAME_INVALID" });
  }, 30_000);

  it("a replayed frame ends the session", async () => {
    const h = await handshake("encrypt");
    const f = h.sealer.seal(h.encode(denial("job_x", 1)));
    expect(
      await outcome(h, () => {
        h.stream.send({ sealed: f });
        h.stream.send({ sealed: f });
      }),
    ).toMatchObject({ reason: "SESSION_FRAME_INVALID" });
  }, 30_000);

  it("reordered frames end the session", async () => {
    const h = await handshake("sign");
    const f1 = h.sealer.seal(h.encode(denial("job_x", 1)));
    const f2 = h.sealer.seal(h.encode(denial("job_x", 2)));
    expect(
      await outcome(h, () => {
        h.stream.send({ sealed: f2 });
        h.stream.send({ sealed: f1 });
      }),
    ).toMatchObject({ reason: "SESSION_FRAME_INVALID" });
  }, 30_000);

  it("an unsealed message after the handshake ends the session", async () => {
    const h = await handshake("sign");
    expect(await outcome(h, () => h.stream.send(denial("job_x", 1)))).toMatchObject({ reason: "SESSION_FRAME_INVALID" });
  }, 30_000);

  it("a service frame reflected back at the service does not open", async () => {
    const h = await handshake("sign");
    // The established frame was sealed service-to-client with seq 1: the right seq, the wrong direction.
    const reflected: SessionFrame = new FrameSealer(h.keys.serviceToClient, h.established.sessionId, "service-to-client").seal(h.encode(denial("job_x", 1)));
    expect(await outcome(h, () => h.stream.send({ sealed: reflected }))).toMatchObject({ reason: "SESSION_FRAME_INVALID" });
  }, 30_000);
});

describe("FrameOpener (property)", () => {
  it("opens exactly the frames sealed for it, in order; any altered byte, seq, session or direction is refused", () => {
    const key = new Uint8Array(32).fill(7);
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { minLength: 1, maxLength: 5 }), fc.nat(), fc.integer({ min: 0, max: 3 }), (bodies, flipAt, how) => {
        const sealer = new FrameSealer(key, "ses_1", "service-to-client");
        const frames = bodies.map((b) => sealer.seal(b));
        const victim = frames[flipAt % frames.length]!;
        const bad: SessionFrame =
          how === 0
            ? { seq: victim.seq, ciphertext: Uint8Array.from(victim.ciphertext, (x, i) => (i === flipAt % victim.ciphertext.length ? x ^ 1 : x)) }
            : how === 1
              ? { seq: Number(victim.seq) + 1, ciphertext: victim.ciphertext }
              : victim;
        const opener = new FrameOpener(key, how === 2 ? "ses_2" : "ses_1", how === 3 ? "client-to-service" : "service-to-client");
        for (const f of frames) {
          if (f === victim) {
            expect(() => opener.open(bad)).toThrow(/SESSION|refused/);
            return;
          }
          if (how >= 2) {
            expect(() => opener.open(f)).toThrow();
            return;
          }
          expect(Buffer.from(opener.open(f))).toEqual(Buffer.from(bodies[frames.indexOf(f)]!));
        }
      }),
      { numRuns: 300 },
    );
  });
});
