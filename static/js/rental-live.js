// The live view of one rental, over /ws/rentals/<id>/: the state badge and log lines come in the messages; on every
// state change the server-rendered sections (request, money, placements, events) are fetched again and swapped in,
// so each part of the page stays current without a reload. Reconnects with backoff.
(function () {
  const root = document.getElementById("rental-live");
  if (!root) return;
  const badge = document.getElementById("rental-state");
  const reason = document.getElementById("rental-reason");
  const status = document.getElementById("live-status");
  const log = document.getElementById("rental-log");
  const logEmpty = document.getElementById("log-empty");
  let refreshing = null; // the section refresh in flight, if any
  let again = false; // another refresh was asked for while one ran
  const labels = JSON.parse(document.getElementById("rental-state-labels").textContent);
  const terminal = new Set(JSON.parse(document.getElementById("rental-terminal-states").textContent));
  const seen = new Set(Array.from(log.children, (line) => line.dataset.key));
  const CLOSE_NOT_FOUND = 4404;
  let state = root.dataset.state;
  let done = root.dataset.settled === "true"; // settled: nothing more will come
  let delay = 1000;

  const setStatus = (text, live) => {
    status.textContent = text;
    status.classList.toggle("on", live);
  };

  const setState = (next, why) => {
    state = next;
    root.dataset.state = next;
    badge.dataset.state = next;
    badge.className = "badge rental-" + next;
    badge.textContent = labels[next] || next;
    if (why !== undefined) reason.textContent = why;
    if (terminal.has(next)) document.getElementById("cancel-form")?.remove();
    // A flash such as "Rental 7 is submitted" describes the state the page was loaded in: drop it once that moves on.
    document.querySelector("main > .messages")?.remove();
  };

  const addLines = (lines) => {
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    for (const line of lines) {
      const key = line.placement + ":" + line.seq;
      if (seen.has(key)) continue;
      seen.add(key);
      const div = document.createElement("div");
      div.className = "line " + line.stream;
      div.dataset.key = key;
      div.textContent = line.text;
      log.appendChild(div);
    }
    logEmpty.hidden = log.children.length > 0;
    if (follow) log.scrollTop = log.scrollHeight;
  };

  // Fetch this page again and swap in every section marked data-live-section (by id); one refresh at a time.
  const refreshSections = () => {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((response) => (response.ok ? response.text() : null))
      .then((html) => {
        if (!html) return;
        const fresh = new DOMParser().parseFromString(html, "text/html");
        for (const section of document.querySelectorAll("[data-live-section]")) {
          const next = fresh.getElementById(section.id);
          if (next) section.replaceWith(document.importNode(next, true));
        }
        const freshRoot = fresh.getElementById("rental-live");
        if (freshRoot && freshRoot.dataset.state !== state) setState(freshRoot.dataset.state);
      })
      .catch(() => {}) // the page keeps what it shows; the next change or a reload brings the rest
      .finally(() => {
        refreshing = null;
        if (again) {
          again = false;
          refreshSections();
        }
      });
    return refreshing;
  };

  const handlers = {
    "rental.snapshot": (message) => {
      // Whatever changed between the page load and this (re)connection is fetched once.
      if (message.state !== state) setState(message.state, message.reason);
      addLines(message.lines);
      refreshSections();
    },
    "rental.state": (message) => {
      setState(message.state, message.reason);
      refreshSections();
    },
    "rental.logs": (message) => addLines(message.lines.map((line) => ({ placement: message.placement, ...line }))),
    "rental.settled": () => {
      done = true;
      refreshSections();
    },
  };

  const connect = () => {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
    socket.addEventListener("open", () => {
      delay = 1000;
      setStatus("live", true);
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      const handle = handlers[message.type];
      if (handle) handle(message);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === CLOSE_NOT_FOUND) {
        setStatus("live view unavailable", false);
      } else if (done) {
        setStatus("ended", false);
      } else {
        setStatus("reconnecting…", false);
        setTimeout(connect, delay + Math.random() * 500);
        delay = Math.min(delay * 2, 30000);
      }
    });
  };

  if (done) setStatus("ended", false);
  else connect();
})();
