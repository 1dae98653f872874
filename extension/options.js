// The options page (also the toolbar popup): terms, pairing, sources on/off, and the review list.
"use strict";

const { TERMS_VERSION, MAX_BATCH } = JanctionCore;
const $ = (id) => document.getElementById(id);
const DEFAULT_SERVER = "http://localhost:8000";

async function state() {
  return chrome.storage.local.get(["server", "device", "deviceId", "counter", "consent", "enabled", "pending"]);
}

function say(text) {
  $("status").textContent = text;
}

async function render() {
  const s = await state();
  $("terms-version").textContent = TERMS_VERSION;
  $("consent-state").textContent =
    s.consent && s.consent.terms_version === TERMS_VERSION ? `agreed ${s.consent.accepted_at}` : "not agreed yet";
  $("server-url").value = s.server || DEFAULT_SERVER;
  $("fingerprint").textContent = s.device ? `${s.device.fingerprint} (${s.device.algorithm})` : "none yet";
  $("pair-state").textContent = s.deviceId ? `paired as device ${s.deviceId}` : "not paired";

  const sources = $("sources");
  sources.replaceChildren();
  for (const adapter of JanctionAdapters.adapters) {
    const item = document.createElement("li");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = `source-${adapter.id}`;
    box.checked = Boolean((s.enabled || {})[adapter.id]);
    box.addEventListener("change", async () => {
      const { enabled = {} } = await chrome.storage.local.get("enabled");
      enabled[adapter.id] = box.checked;
      await chrome.storage.local.set({ enabled });
    });
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.textContent = ` ${adapter.label}`;
    item.append(box, label);
    sources.append(item);
  }

  const review = $("review");
  review.replaceChildren();
  for (const record of s.pending || []) {
    const item = document.createElement("li");
    item.dataset.id = record.id;
    const text = document.createElement("textarea");
    text.value = record.content;
    text.className = "content";
    text.addEventListener("change", async () => {
      const { pending = [] } = await chrome.storage.local.get("pending");
      await chrome.storage.local.set({ pending: JanctionCore.reviewEdit(pending, record.id, text.value, JanctionRedact.redact) });
      render();
    });
    const meta = document.createElement("div");
    meta.className = "meta";
    const redacted = record.redacted.length ? `; redacted: ${record.redacted.join(", ")}` : "";
    meta.textContent = `${record.kind} from ${record.source}, ${record.captured_at}${redacted}`;
    const drop = document.createElement("button");
    drop.textContent = "Drop";
    drop.className = "drop";
    drop.addEventListener("click", async () => {
      const { pending = [] } = await chrome.storage.local.get("pending");
      await chrome.storage.local.set({ pending: JanctionCore.reviewDrop(pending, record.id) });
      render();
    });
    item.append(text, meta, drop);
    review.append(item);
  }
  if (!(s.pending || []).length) review.textContent = "Nothing captured yet.";
}

$("accept-terms").addEventListener("click", async () => {
  await chrome.storage.local.set({ consent: { terms_version: TERMS_VERSION, accepted_at: new Date().toISOString() } });
  render();
});

$("save-server").addEventListener("click", async () => {
  const url = new URL($("server-url").value);
  await chrome.storage.local.set({ server: url.origin });
  render();
});

$("pair").addEventListener("click", async () => {
  let { device, server } = await state();
  if (!device) {
    device = await JanctionCore.deviceKeyNew(crypto.subtle);
    await chrome.storage.local.set({ device, deviceId: null, counter: 0 });
  }
  const params = new URLSearchParams({ public_key: device.publicKey, algorithm: device.algorithm, name: "Janction extension" });
  await chrome.tabs.create({ url: `${server || DEFAULT_SERVER}/contributions/pair/?${params}` });
  render();
});

async function checkPairing() {
  const { device, server } = await state();
  if (!device) return null;
  const url = `${server || DEFAULT_SERVER}/api/v1/contributions/devices/status/?public_key=${encodeURIComponent(device.publicKey)}`;
  const answer = await (await fetch(url, { credentials: "omit" })).json();
  await chrome.storage.local.set({ deviceId: answer.paired ? answer.device_id : null });
  say(answer.paired ? "Paired." : answer.revoked ? "This key was revoked: pair again (a new key is made)." : "Not paired yet.");
  if (answer.revoked) await chrome.storage.local.set({ device: null });
  render();
  return answer;
}
$("check-pairing").addEventListener("click", checkPairing);

$("submit").addEventListener("click", async () => {
  const s = await state();
  if (!s.consent || s.consent.terms_version !== TERMS_VERSION) return say("Agree to the terms first.");
  if (!s.device || !s.deviceId) return say("Pair with Janction first.");
  const records = (s.pending || []).slice(0, MAX_BATCH);
  if (!records.length) return say("Nothing to submit.");
  const counter = (s.counter || 0) + 1;
  await chrome.storage.local.set({ counter }); // used even if the upload fails: a counter is never reused
  const body = JanctionCore.uploadBody({ deviceId: s.deviceId, counter, consent: s.consent, records });
  const signature = await JanctionCore.signBody(crypto.subtle, s.device, body);
  let response;
  try {
    response = await fetch(`${s.server || DEFAULT_SERVER}/api/v1/contributions/`, {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json", "X-Janction-Signature": signature },
      body,
    });
  } catch (error) {
    return say(`The site did not answer: ${error}`);
  }
  const answer = await response.json();
  if (response.status !== 201) return say(`Refused (${response.status}): ${answer.message}`);
  const sent = new Set(records.map((record) => record.id));
  const { pending = [] } = await chrome.storage.local.get("pending");
  await chrome.storage.local.set({ pending: pending.filter((record) => !sent.has(record.id)) });
  const duplicates = answer.items.filter((item) => item.status === "duplicate").length;
  say(`Submitted ${answer.items.length} records (${duplicates} duplicates earn nothing).`);
  render();
});

chrome.storage.onChanged.addListener((changes) => {
  if (changes.pending) render();
});
render();
