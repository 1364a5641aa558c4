import { get } from "./api.js";
import { drawBars, sparkline } from "./chart.js";
import { el, number, replaceRows } from "./dom.js";
import { every, failed, startPage } from "./shell.js";

const REFRESH_SECONDS = 5;
let lastSeries = [];

function status(row) {
  if (row.paused) return el("span", { class: "badge state-paused", text: "paused" });
  if (row.consumers === 0) {
    // Tasks waiting with nobody to run them is what an operator must notice first.
    return el("span", { class: `badge ${row.waiting ? "state-pending" : "state-idle"}`, text: "no consumers" });
  }
  if (row.consumers === null) return el("span", { class: "badge state-unknown", text: "queue unknown" });
  return el("span", { class: "badge state-active", text: "active" });
}

function render(overview) {
  const rows = overview.schedulers;
  const totals = { waiting: 0, running: 0, consumers: 0, completed_5m: 0, failed_5m: 0, completed_60m: 0 };
  const series = new Array(15).fill(0);
  for (const row of rows) {
    for (const name of Object.keys(totals)) totals[name] += row[name] || 0;
    row.throughput.forEach((value, index) => {
      series[index] += value;
    });
  }
  for (const [name, value] of Object.entries(totals)) {
    document.querySelector(`[data-total="${name}"]`).textContent = number(value);
  }
  replaceRows(
    document.querySelector("#schedulers tbody"),
    rows.map((row) =>
      el(
        "tr",
        { "data-scheduler": row.name },
        el("th", { scope: "row" }, el("a", { href: `/ui/tasks?scheduler=${encodeURIComponent(row.name)}`, text: row.name }), el("span", { class: "sub", text: row.runtime })),
        el("td", {}, status(row)),
        el("td", { class: "num", "data-field": "waiting", text: number(row.waiting) }),
        el("td", { class: "num", text: number(row.delayed) }),
        el("td", { class: "num", "data-field": "running", text: number(row.running) }),
        el("td", { class: "num", text: number(row.consumers) }),
        el("td", { class: "num" }, el("span", { class: row.completed_5m ? "ok" : "", text: number(row.completed_5m) }), " / ", number(row.completed_60m)),
        el("td", { class: "num" }, el("span", { class: row.failed_5m ? "bad" : "", text: number(row.failed_5m) }), " / ", number(row.failed_60m)),
        el("td", {}, sparkline(row.throughput)),
      ),
    ),
    "No schedulers registered yet.",
    9,
  );
  lastSeries = series;
  drawBars(document.getElementById("throughput"), series);
  document.getElementById("chart-summary").textContent = `Tasks finished per minute, oldest first: ${series.join(", ")}`;
  document.getElementById("updated").textContent = `Updated ${new Date(overview.generated_at).toLocaleTimeString()}`;
}

const started = await startPage().catch(failed);
if (started) {
  every(REFRESH_SECONDS, async () => render(await get("/overview")));
  window.addEventListener("resize", () => drawBars(document.getElementById("throughput"), lastSeries));
}
