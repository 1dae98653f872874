// The rent form: ask /api/v1/price-estimate/ what the chosen pool would cost now, and send the form only once.
(function () {
  const form = document.getElementById("rent-form");
  if (!form) return;
  const button = document.getElementById("estimate-button");
  const output = document.getElementById("estimate");
  const labels = { pool: "Pool", units: "vGPUs", max_price: "Max price" };
  // The API's error body names each field that needs a change; say which, in the form's own words.
  const explain = (body) => {
    const fields = body && body.detail && typeof body.detail === "object" ? Object.entries(body.detail) : [];
    const parts = fields.map(([name, problems]) => (labels[name] || name) + ": " + [].concat(problems).join(" "));
    return parts.length ? parts.join("; ") : (body && body.message) || "No estimate: check the pool, vGPUs and max price.";
  };
  // The other sub-pool (dedicated or interruptible capacity) has its own price: say it too.
  const other = (body) =>
    body.other
      ? "; " + body.other.capacity + ": " + (body.other.would_win ? trim(body.other.price_per_vgpu_hour) + " USDC" : "would not win") +
        " (" + body.other.free_units + " free)"
      : "";
  const trim = (decimal) => (decimal.includes(".") ? decimal.replace(/0+$/, "").replace(/\.$/, "") : decimal);

  button.addEventListener("click", async () => {
    const query = new URLSearchParams({
      pool: form.elements.pool.value,
      units: form.elements.vgpus.value,
      max_price: form.elements.max_price.value,
      capacity: form.elements.accepts_interruptible && form.elements.accepts_interruptible.checked ? "interruptible" : "dedicated",
    });
    output.textContent = "Estimating…";
    try {
      const response = await fetch(button.dataset.url + "?" + query, { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) {
        output.textContent = explain(body);
      } else if (body.would_win) {
        output.textContent =
          "If the round ran now: " + trim(body.price_per_vgpu_hour) + " USDC per vGPU-hour of " + body.capacity +
          " capacity (" + body.free_units + " vGPUs free, " + body.waiting_units + " asked for)" + other(body) + ".";
      } else {
        output.textContent =
          "At this max price the rental would not win now (" + body.free_units + " vGPUs free, " +
          body.waiting_units + " asked for); it waits for a later round or its deadline" + other(body) + ".";
      }
    } catch (error) {
      output.textContent = "No estimate right now; you can still rent.";
    }
  });

  // The server takes each form token once; this spares the second request of a double click.
  form.addEventListener("submit", () => {
    document.getElementById("rent-submit").disabled = true;
  });
})();
