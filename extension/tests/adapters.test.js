// Each source's adapter reads exactly one record from a page shaped like the real one, and nothing elsewhere.
const test = require("node:test");
const assert = require("node:assert/strict");
const adapters = require("../src/adapters.js");

function fakeDoc(counts = {}) {
  const listeners = {};
  return {
    listeners,
    box: null,
    querySelectorAll: (selector) => ({ length: counts[selector] || 0 }),
    querySelector(selector) {
      return selector === "#prompt-textarea" ? this.box : null;
    },
    addEventListener: (type, fn) => (listeners[type] = fn),
  };
}

test("search result pages give their query and result count", () => {
  const doc = fakeDoc({ "article[data-testid='result'], .result": 10, "#search .g": 8, "#b_results > li.b_algo": 7 });
  const cases = [
    ["https://duckduckgo.com/?q=rust+borrow+checker&ia=web", "duckduckgo", 10],
    ["https://www.google.com/search?q=rust%20borrow%20checker&hl=en", "google", 8],
    ["https://www.google.co.uk/search?q=rust+borrow+checker", "google", 8],
    ["https://www.bing.com/search?q=rust+borrow+checker&form=QBLH", "bing", 7],
  ];
  for (const [url, id, results] of cases) {
    const adapter = adapters.adapterFor(url);
    assert.equal(adapter.id, id, url);
    assert.equal(adapter.kind, "search_query");
    assert.deepEqual(adapter.extract(url, doc), { content: "rust borrow checker", metadata: { results } });
  }
});

test("pages without a query, and other sites, give nothing", () => {
  assert.equal(adapters.adapterFor("https://duckduckgo.com/?q=").extract("https://duckduckgo.com/?q=", fakeDoc()), null);
  assert.equal(adapters.adapterFor("https://example.com/?q=x"), null);
  assert.equal(adapters.adapterFor("https://duckduckgo.com.evil.example/?q=x"), null);
  assert.equal(adapters.adapterFor("https://www.google.com/maps?q=x"), null);
});

test("the chatbot adapter captures a question when it is sent, not while it is typed", () => {
  const adapter = adapters.adapterFor("https://chatgpt.com/c/123");
  assert.equal(adapter.id, "chatgpt");
  const doc = fakeDoc();
  const sent = [];
  adapter.attach(doc, (content) => sent.push(content));
  const box = { textContent: "  how do   vaccines work ", closest: (sel) => (sel === "#prompt-textarea" ? box : null) };
  doc.box = box;
  doc.listeners.keydown({ target: box, key: "a", shiftKey: false });
  doc.listeners.keydown({ target: box, key: "Enter", shiftKey: true });
  assert.deepEqual(sent, []);
  doc.listeners.keydown({ target: box, key: "Enter", shiftKey: false });
  const button = { closest: (sel) => (sel === "[data-testid='send-button']" ? button : null) };
  doc.listeners.click({ target: button });
  assert.deepEqual(sent, ["how do vaccines work", "how do vaccines work"]);
});

test("a new source is one register call", () => {
  const added = adapters.register(
    adapters.searchPage({ id: "example", label: "Example", matches: [/^https:\/\/search\.example\/\?/], param: "s" }),
  );
  assert.equal(adapters.adapterFor("https://search.example/?s=hello").extract("https://search.example/?s=hello", null).content, "hello");
  assert.throws(() => adapters.register({ id: "broken", label: "x", kind: "search_query", matches: [] }));
  adapters.adapters.splice(adapters.adapters.indexOf(added), 1);
});
