// Sign an upload body as the extension does (extension/src/core.js) and print what the server needs to verify it.
const { webcrypto } = require("node:crypto");
const core = require("../../extension/src/core.js");

async function main() {
  const body = process.argv[2];
  const out = [];
  for (const forceEcdsa of [false, true]) {
    const subtle = forceEcdsa
      ? { ...bind(webcrypto.subtle), generateKey: (a, ...r) => (a.name === "Ed25519" ? Promise.reject(new Error("no")) : webcrypto.subtle.generateKey(a, ...r)) }
      : webcrypto.subtle;
    const device = await core.deviceKeyNew(subtle);
    out.push({ algorithm: device.algorithm, public_key: device.publicKey, fingerprint: device.fingerprint, signature: await core.signBody(webcrypto.subtle, device, body) });
  }
  process.stdout.write(JSON.stringify(out));
}

function bind(subtle) {
  return { exportKey: subtle.exportKey.bind(subtle), digest: subtle.digest.bind(subtle) };
}

main();
