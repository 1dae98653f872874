// The live view of one rental: state badge, events and log lines pushed over /ws/rentals/<id>/.
// The page is rendered complete by the server; this only adds what happens after, and reconnects with backoff.
(function () {
  const root = document.getElementById("rental-live");
  if (!root) return;
  const badge = document.getElementById("rental-state");
  const reason = document.getElementById("rental-reason");
  const status = document.getElementById("live-status");
  const log = document.getElementById("rental-log");
  const logEmpty = document.getElementById("log-empty");
  const events = document.querySelector("#events tbody");
  const cancelForm = document.getElementById("cancel-form");
  const settled = document.getElementById("rental-settled");
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
    if (cancelForm && terminal.has(next)) cancelForm.remove();
  };

  const addEvent = (from, to, why, at) => {
    const row = events.insertRow();
    for (const text of [new Date(at).toISOString().slice(0, 19).replace("T", " "), from || "–", to, why]) {
      row.insertCell().textContent = text;
    }
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

  const refreshMoney = () =>
    fetch(root.dataset.apiUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : null))
      .then((rental) => {
        if (!rental) return;
        for (const cell of document.querySelectorAll("[data-money]")) cell.textContent = rental[cell.dataset.money];
        if (rental.settled_at) settled.textContent = rental.settled_at.slice(0, 19).replace("T", " ");
      })
      .catch(() => {}); // the numbers on the page stay; a reload shows the latest

  const handlers = {
    "rental.snapshot": (message) => {
      if (message.state !== state) setState(message.state, message.reason);
      addLines(message.lines);
    },
    "rental.state": (message) => {
      addEvent(state, message.state, message.reason, message.at);
      setState(message.state, message.reason);
      refreshMoney();
    },
    "rental.logs": (message) => addLines(message.lines.map((line) => ({ placement: message.placement, ...line }))),
    "rental.settled": () => {
      done = true;
      refreshMoney();
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
