// The extension's logic without the browser around it: device keys, the upload body and its signature,
// and the local review list. The options page and the service worker use it; node's test runner tests it.
(function (root) {
  "use strict";

  const TERMS_VERSION = "2026-12-01";
  const SIGNING_PREFIX = "janction-contribution-v1\n";
  const MAX_PENDING = 500;
  const MAX_BATCH = 50;

  function toBase64(bytes) {
    let binary = "";
    for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  /** Make a device key pair: Ed25519 where WebCrypto has it, else ECDSA P-256. Keys are stored as JWK. */
  async function deviceKeyNew(subtle) {
    let algorithm = "Ed25519";
    let pair;
    try {
      pair = await subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    } catch (error) {
      algorithm = "ECDSA-P256";
      pair = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
    }
    const publicRaw = await subtle.exportKey("raw", pair.publicKey);
    return {
      algorithm,
      publicKey: toBase64(publicRaw),
      privateJwk: await subtle.exportKey("jwk", pair.privateKey),
      fingerprint: await fingerprint(subtle, publicRaw),
    };
  }

  /** The server's fingerprint of a key: the first 8 bytes of its SHA-256, as four upper-case hex groups. */
  async function fingerprint(subtle, publicRaw) {
    const digest = new Uint8Array(await subtle.digest("SHA-256", publicRaw));
    const hex = [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
    return hex.match(/.{4}/g).join("-");
  }

  function importParams(algorithm) {
    return algorithm === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", namedCurve: "P-256" };
  }

  /** Sign SIGNING_PREFIX + body (a string) with the stored device key; return the signature in base64. */
  async function signBody(subtle, device, body) {
    const key = await subtle.importKey("jwk", device.privateJwk, importParams(device.algorithm), false, ["sign"]);
    const params = device.algorithm === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", hash: "SHA-256" };
    const message = new TextEncoder().encode(SIGNING_PREFIX + body);
    return toBase64(await subtle.sign(params, key, message));
  }

  /** Build the upload body for the selected review-list records. */
  function uploadBody({ deviceId, counter, consent, records }) {
    return JSON.stringify({
      device_id: deviceId,
      counter,
      consent: { terms_version: consent.terms_version, accepted_at: consent.accepted_at },
      records: records.map((record) => ({
        kind: record.kind,
        source: record.source,
        content: record.content,
        captured_at: record.captured_at,
        metadata: record.metadata || {},
        quotes_others: Boolean(record.quotes_others),
      })),
    });
  }

  /** Add a captured record (redacted first) to the review list; the same text from the same source is kept once. */
  function reviewAdd(pending, capture, redact, now = new Date()) {
    const { text, found } = redact(capture.content);
    if (!text.trim()) return pending;
    if (pending.some((record) => record.source === capture.source && record.content === text)) return pending;
    const record = {
      id: `${now.getTime()}-${Math.random().toString(36).slice(2, 8)}`,
      source: capture.source,
      kind: capture.kind,
      content: text,
      redacted: found,
      metadata: capture.metadata || {},
      quotes_others: Boolean(capture.quotes_others),
      captured_at: now.toISOString(),
    };
    return [...pending, record].slice(-MAX_PENDING);
  }

  /** Replace a record's text with the user's edit, redacted again (an edit cannot bring private data back). */
  function reviewEdit(pending, id, content, redact) {
    return pending.map((record) => {
      if (record.id !== id) return record;
      const { text, found } = redact(content);
      return { ...record, content: text, redacted: [...new Set([...record.redacted, ...found])] };
    });
  }

  function reviewDrop(pending, id) {
    return pending.filter((record) => record.id !== id);
  }

  const api = {
    TERMS_VERSION,
    SIGNING_PREFIX,
    MAX_BATCH,
    deviceKeyNew,
    fingerprint,
    signBody,
    uploadBody,
    reviewAdd,
    reviewEdit,
    reviewDrop,
    toBase64,
  };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.JanctionCore = api;
})(globalThis);
