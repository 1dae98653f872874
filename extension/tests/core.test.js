// Device keys, signatures and the review list, with node's WebCrypto (the browser's API).
const test = require("node:test");
const assert = require("node:assert/strict");
const { webcrypto } = require("node:crypto");
const core = require("../src/core.js");
const { redact } = require("../src/redact.js");

const subtle = webcrypto.subtle;

test("a device key signs the prefixed body and the signature verifies", async () => {
  const device = await core.deviceKeyNew(subtle);
  assert.ok(["Ed25519", "ECDSA-P256"].includes(device.algorithm));
  assert.match(device.fingerprint, /^[0-9A-F]{4}(-[0-9A-F]{4}){3}$/);
  const body = core.uploadBody({
    deviceId: 3,
    counter: 9,
    consent: { terms_version: core.TERMS_VERSION, accepted_at: "2026-12-01T10:00:00.000Z" },
    records: [{ kind: "search_query", source: "duckduckgo", content: "q", captured_at: "x", id: "local", redacted: [] }],
  });
  assert.deepEqual(Object.keys(JSON.parse(body).records[0]), ["kind", "source", "content", "captured_at", "metadata", "quotes_others"]);
  const signature = Buffer.from(await core.signBody(subtle, device, body), "base64");
  const publicKey = await subtle.importKey("raw", Buffer.from(device.publicKey, "base64"), { name: device.algorithm === "Ed25519" ? "Ed25519" : "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const params = device.algorithm === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", hash: "SHA-256" };
  const message = new TextEncoder().encode(core.SIGNING_PREFIX + body);
  assert.equal(await subtle.verify(params, publicKey, signature, message), true);
  assert.equal(await subtle.verify(params, publicKey, signature, new TextEncoder().encode(body)), false);
});

test("without Ed25519 the device key is ECDSA P-256", async () => {
  const noEd25519 = {
    generateKey: (algorithm, ...rest) =>
      algorithm.name === "Ed25519" ? Promise.reject(new Error("NotSupportedError")) : subtle.generateKey(algorithm, ...rest),
    exportKey: (...args) => subtle.exportKey(...args),
    digest: (...args) => subtle.digest(...args),
  };
  const device = await core.deviceKeyNew(noEd25519);
  assert.equal(device.algorithm, "ECDSA-P256");
  assert.equal(Buffer.from(device.publicKey, "base64").length, 65);
  assert.equal(Buffer.from(await core.signBody(subtle, device, "{}"), "base64").length, 64);
});

test("captures are redacted before they enter the review list, kept once, edited and dropped", () => {
  const capture = { source: "duckduckgo", kind: "search_query", content: "reply to bob@example.com", metadata: {} };
  let pending = core.reviewAdd([], capture, redact);
  assert.equal(pending[0].content, "reply to [email]");
  assert.deepEqual(pending[0].redacted, ["email"]);
  assert.equal(core.reviewAdd(pending, capture, redact).length, 1);
  pending = core.reviewEdit(pending, pending[0].id, "reply to alice@example.org call 555 123 4567", redact);
  assert.equal(pending[0].content, "reply to [email] call [phone]");
  assert.deepEqual(core.reviewDrop(pending, pending[0].id), []);
});
