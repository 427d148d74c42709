// The HPKE aad under which an envelope's content key is sealed: a fixed label, then the
// caller's aad. Part of "Sealed results and the envelope format": the label keeps a sealed
// content key from being mistaken for (or replayed as) a single-shot sealed result.

const LABEL = Buffer.from("trustplane/envelope/v1 content key\0", "ascii");

export function contentKeyAad(aad: Uint8Array): Uint8Array {
  return Buffer.concat([LABEL, aad]);
}
