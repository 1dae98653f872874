// Per-source adapters: each knows which pages it reads and how to read one record from them. To add a
// source, register an adapter object (see README.md): id, label, kind, the URL patterns, and either
// `extract(url, doc)` for result pages or `attach(doc, emit)` for question boxes. Content scripts load this
// file on every listed site, but nothing is read unless the user enabled that source in the options page.
(function (root) {
  "use strict";

  const adapters = [];

  function register(adapter) {
    for (const field of ["id", "label", "kind", "matches"]) {
      if (!adapter[field]) throw new Error(`an adapter needs ${field}`);
    }
    if (typeof adapter.extract !== "function" && typeof adapter.attach !== "function") {
      throw new Error("an adapter needs extract(url, doc) or attach(doc, emit)");
    }
    const at = adapters.findIndex((known) => known.id === adapter.id);
    if (at >= 0) adapters.splice(at, 1, adapter);
    else adapters.push(adapter);
    return adapter;
  }

  function adapterFor(url) {
    return adapters.find((adapter) => adapter.matches.some((pattern) => pattern.test(url))) || null;
  }

  function cleanText(value, max = 2000) {
    return String(value || "").replace(/\s+/g, " ").trim().slice(0, max);
  }

  /** A search engine's result page: the query from the URL, the number of results from the page. */
  function searchPage({ id, label, matches, param, resultSelector }) {
    return {
      id,
      label,
      kind: "search_query",
      matches,
      extract(url, doc) {
        const query = cleanText(new URL(url).searchParams.get(param));
        if (!query) return null;
        const results = doc && resultSelector ? doc.querySelectorAll(resultSelector).length : 0;
        return { content: query, metadata: { results } };
      },
    };
  }

  register(
    searchPage({
      id: "duckduckgo",
      label: "DuckDuckGo result pages",
      matches: [/^https:\/\/duckduckgo\.com\/\?/, /^https:\/\/html\.duckduckgo\.com\/html\/?\?/],
      param: "q",
      resultSelector: "article[data-testid='result'], .result",
    }),
  );
  register(
    searchPage({
      id: "google",
      label: "Google result pages",
      matches: [/^https:\/\/www\.google\.[a-z.]+\/search\?/],
      param: "q",
      resultSelector: "#search .g",
    }),
  );
  register(
    searchPage({
      id: "bing",
      label: "Bing result pages",
      matches: [/^https:\/\/www\.bing\.com\/search\?/],
      param: "q",
      resultSelector: "#b_results > li.b_algo",
    }),
  );

  /** A chatbot's question box: the question when the user sends it (Enter without Shift, or the send button). */
  register({
    id: "chatgpt",
    label: "ChatGPT questions",
    kind: "chatbot_prompt",
    matches: [/^https:\/\/chatgpt\.com\//, /^https:\/\/chat\.openai\.com\//],
    box: "#prompt-textarea",
    sendButton: "[data-testid='send-button']",
    attach(doc, emit) {
      const adapter = this;
      const question = () => {
        const box = doc.querySelector(adapter.box);
        return box ? cleanText(box.value !== undefined ? box.value : box.textContent) : "";
      };
      const send = () => {
        const text = question();
        if (text) emit(text, {});
      };
      doc.addEventListener(
        "keydown",
        (event) => {
          const inBox = event.target && event.target.closest && event.target.closest(adapter.box);
          if (inBox && event.key === "Enter" && !event.shiftKey && !event.isComposing) send();
        },
        true,
      );
      doc.addEventListener(
        "click",
        (event) => {
          if (event.target && event.target.closest && event.target.closest(adapter.sendButton)) send();
        },
        true,
      );
    },
  });

  const api = { register, adapterFor, adapters, cleanText, searchPage };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.JanctionAdapters = api;
})(globalThis);
