// Runs on the sites the adapters list. Reads nothing unless the user enabled this source (off by default).
(async function () {
  "use strict";
  const adapter = globalThis.JanctionAdapters.adapterFor(location.href);
  if (!adapter) return;
  const { enabled = {} } = await chrome.storage.local.get("enabled");
  if (!enabled[adapter.id]) return;
  const emit = (content, metadata) =>
    chrome.runtime.sendMessage({ type: "capture", source: adapter.id, kind: adapter.kind, content, metadata });
  if (adapter.extract) {
    const found = adapter.extract(location.href, document);
    if (found) emit(found.content, found.metadata);
  } else {
    adapter.attach(document, emit);
  }
})();
