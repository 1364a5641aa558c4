import { describe, get, post } from "./api.js";
import { el, number, shortId, time } from "./dom.js";
import { every, failed, notify, startPage } from "./shell.js";

let caller = null;

function pauseButton(scheduler, paused) {
  const action = paused ? "resume" : "pause";
  return el("button", {
    type: "button",
    class: `button small ${paused ? "primary" : ""}`,
    "data-action": action,
    "aria-label": `${paused ? "Resume" : "Pause"} the scheduler ${scheduler}`,
    text: paused ? "Resume" : "Pause",
    onclick: async (clicked) => {
      clicked.target.disabled = true;
      try {
        await post(`/scheduler/${encodeURIComponent(scheduler)}/${action}`);
        notify(`${scheduler} ${paused ? "resumed" : "paused"}: every replica follows within a heartbeat.`, "ok");
        await load();
      } catch (error) {
        notify(describe(error), "bad");
      } finally {
        clicked.target.disabled = false;
      }
    },
  });
}

function group(scheduler, consumers) {
  const paused = Boolean(scheduler.paused);
  const head = el(
    "div",
    { class: "card-head" },
    el("h2", {}, scheduler.name, " ", el("span", { class: "sub", text: scheduler.runtime })),
    el(
      "div",
      { class: "actions" },
      el("span", { class: `badge ${paused ? "state-paused" : "state-active"}`, text: paused ? "paused" : "taking tasks" }),
      caller.role === "admin" ? pauseButton(scheduler.name, paused) : null,
    ),
  );
  const rows = consumers.map((consumer) =>
    el(
      "tr",
      { "data-consumer": consumer.id },
      el("td", { class: "mono", title: consumer.id, text: consumer.id }),
      el("td", { text: `${consumer.host} · ${consumer.pid}` }),
      el("td", { text: consumer.version }),
      el("td", { class: "num", text: `${consumer.running.length} / ${consumer.concurrency}` }),
      el("td", {}, consumer.running.map((id) => [el("a", { class: "mono", href: `/ui/tasks/${id}`, text: shortId(id) }), " "])),
      el("td", {}, time(consumer.started_at)),
      el("td", {}, time(consumer.last_heartbeat)),
    ),
  );
  return el(
    "section",
    { class: "card", "data-scheduler": scheduler.name },
    head,
    rows.length
      ? el(
          "div",
          { class: "table-wrap" },
          el(
            "table",
            { class: "data" },
            el("caption", { class: "visually-hidden", text: `Consumers of ${scheduler.name}` }),
            el(
              "thead",
              {},
              el("tr", {}, ["Consumer", "Host · pid", "Version", "Busy", "Running", "Started", "Heartbeat"].map((name) => el("th", { scope: "col", text: name }))),
            ),
            el("tbody", {}, rows),
          ),
        )
      : el("p", { class: "muted", text: "No live consumer." }),
  );
}

async function load() {
  const schedulers = await get("/schedulers");
  const byScheduler = new Map(schedulers.map((scheduler) => [scheduler.name, []]));
  for (const consumer of (await get("/consumers")).consumers) {
    if (!byScheduler.has(consumer.scheduler)) byScheduler.set(consumer.scheduler, []);
    byScheduler.get(consumer.scheduler).push(consumer);
  }
  const groups = schedulers.map((scheduler) => group(scheduler, byScheduler.get(scheduler.name)));
  document.getElementById("groups").replaceChildren(...(groups.length ? groups : [el("p", { class: "muted", text: "No schedulers registered yet." })]));
  document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

const started = await startPage({ roles: ["admin", "worker"] }).catch(failed);
if (started) {
  ({ caller } = started);
  every(5, load);
}
