// The finstream console's overview: four live charts over the last 15 minutes
// (from /api/series, drawn with the vendored uPlot) and the tables below them,
// both refreshed every two seconds. Nothing is loaded from anywhere else.
"use strict";

(function () {
  const CHARTS = [
    ["chart-produced", "produced_per_s", "records/s", "#2f6fdf"],
    ["chart-loaded", "loaded_per_s", "rows/s", "#1b9e5a"],
    ["chart-lag", "lag", "messages", "#d9822b"],
    ["chart-latency", "produce_latency_ms", "ms", "#a23bbf"],
  ];
  const plots = {};

  function width(el) {
    return Math.max(300, el.clientWidth - 16);
  }

  function draw(series) {
    for (const [id, key, unit, color] of CHARTS) {
      const el = document.getElementById(id);
      if (!el) continue;
      const data = [series.t, series[key]];
      const known = series[key].filter((v) => v !== null).length;
      el.dataset.points = String(known);
      if (!plots[id]) {
        plots[id] = new uPlot(
          {
            width: width(el),
            height: 180,
            legend: { show: true },
            scales: { x: { time: true } },
            // Points too: an interval of its own (a burst between idle seconds) still shows.
            series: [{}, { label: unit, stroke: color, width: 2, spanGaps: false, points: { show: true, size: 4 } }],
            axes: [{}, { size: 60 }],
          },
          data,
          el
        );
      } else {
        plots[id].setData(data);
      }
    }
  }

  async function refreshCharts() {
    try {
      const r = await fetch("/api/series", { cache: "no-store" });
      if (r.ok) draw(await r.json());
    } catch (e) {
      // The process may be restarting: try again at the next tick.
    }
  }

  async function refreshTables() {
    const live = document.getElementById("live");
    if (!live) return;
    try {
      const r = await fetch(location.pathname, { cache: "no-store" });
      if (!r.ok) return;
      // The server escapes every value: the fragment is parsed as HTML, not run.
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("live");
      const uptime = doc.getElementById("uptime");
      if (fresh) live.replaceChildren(...fresh.childNodes);
      if (uptime) document.getElementById("uptime").textContent = uptime.textContent;
    } catch (e) {
      // As above.
    }
  }

  window.addEventListener("resize", () => {
    for (const [id] of CHARTS) {
      const el = document.getElementById(id);
      if (plots[id] && el) plots[id].setSize({ width: width(el), height: 180 });
    }
  });

  refreshCharts();
  setInterval(() => {
    refreshCharts();
    refreshTables();
  }, 2000);
})();
