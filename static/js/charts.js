// Draw every <canvas data-chart="ID"> with Chart.js from the JSON the page embeds in <script type="application/json"
// id="ID"> (Django's json_script) or in the canvas's data-chart-json: the server's selector result as it is.
// Time axes are epoch milliseconds on a linear scale, labelled in the reader's local time.
(function () {
  if (!window.Chart) return;
  const palette = ["#2f6fed", "#2e9d4f", "#c0392b", "#8e44ad", "#d35400", "#16a085"];
  const DAY = 24 * 3600 * 1000;
  const timeLabel = (span) => (value) =>
    span < DAY
      ? new Date(value).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: span < 600000 ? "2-digit" : undefined })
      : new Date(value).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  // A time axis spans the data, at least two minutes (one sample alone would stretch it over years).
  const timeRange = (datasets) => {
    const xs = datasets.flatMap((set) => set.data.map((point) => point.x));
    if (!xs.length) return {};
    let min = Math.min(...xs), max = Math.max(...xs);
    if (max - min < 120000) {
      const middle = (min + max) / 2;
      min = middle - 60000;
      max = middle + 60000;
    }
    return { min: min, max: max };
  };
  const draw = (canvas) => {
    // A fragment htmx swaps in carries its data in data-chart-json (htmx drops <script> elements it swaps).
    const source = canvas.dataset.chartJson ? null : document.getElementById(canvas.dataset.chart);
    if (!canvas.dataset.chartJson && !source) return;
    const data = JSON.parse(canvas.dataset.chartJson || source.textContent);
    const timed = canvas.dataset.x === "time";
    data.datasets.forEach((set, i) => {
      set.borderColor = set.backgroundColor = palette[i % palette.length];
      // A null y (no data that day, e.g. utilisation while nothing was online) stays a gap, not a zero.
      set.data = set.data.map((point) => ({ x: timed ? Number(point.x) : point.x, y: point.y === null ? null : Number(point.y) }));
    });
    const range = timed ? timeRange(data.datasets) : {};
    const chart = new window.Chart(canvas, {
      type: canvas.dataset.type || "line",
      data: data,
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        parsing: false,
        plugins: { legend: { display: data.datasets.length > 1 } },
        scales: {
          x: timed ? { type: "linear", ...range, ticks: { callback: timeLabel(range.max - range.min), maxTicksLimit: 6 } } : { type: "category" },
          y: { beginAtZero: true, title: { display: Boolean(canvas.dataset.yLabel), text: canvas.dataset.yLabel || "" } },
        },
      },
    });
    canvas.chart = chart;
  };
  document.querySelectorAll("canvas[data-chart], canvas[data-chart-json]").forEach(draw);
  // htmx refreshes a chart's fragment (the rental's GPUs): free the old charts, draw the new ones.
  document.body.addEventListener("htmx:beforeSwap", (event) => {
    event.detail.target.querySelectorAll("canvas[data-chart], canvas[data-chart-json]").forEach((canvas) => canvas.chart && canvas.chart.destroy());
  });
  document.body.addEventListener("htmx:afterSwap", (event) => {
    event.detail.target.querySelectorAll("canvas[data-chart], canvas[data-chart-json]").forEach(draw);
  });
})();
