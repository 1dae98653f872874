// The service worker: the one writer of the review list, so captures from many tabs never overwrite each other.
// Chromium runs this as a service worker; Firefox as an event page with background.scripts loaded before it.
if (typeof importScripts === "function") importScripts("redact.js", "adapters.js", "core.js");

let queue = Promise.resolve();

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  if (!message || message.type !== "capture" || !sender.tab) return false;
  // A capture must come from a page of the source it names.
  const adapter = JanctionAdapters.adapterFor(sender.url || "");
  if (!adapter || adapter.id !== message.source || adapter.kind !== message.kind) return false;
  queue = queue.then(async () => {
    const { enabled = {}, pending = [] } = await chrome.storage.local.get(["enabled", "pending"]);
    if (!enabled[message.source]) return; // turned off since the page loaded
    const next = JanctionCore.reviewAdd(pending, message, JanctionRedact.redact);
    await chrome.storage.local.set({ pending: next });
  });
  queue.then(() => reply({ ok: true }));
  return true;
});
