import { get } from "./api.js";
import { badge, el, pretty, replaceRows, time } from "./dom.js";
import { enabledBadge, scheduleActions, trigger } from "./schedules.js";
import { every, failed, startPage } from "./shell.js";

const scheduleId = document.body.dataset.scheduleId;

async function load() {
  const [schedule, runs] = await Promise.all([get(`/schedules/${scheduleId}`), get(`/schedules/${scheduleId}/runs`, { limit: 100 })]);
  document.getElementById("schedule-title").textContent = schedule.name;
  document.getElementById("schedule-actions").replaceChildren(enabledBadge(schedule), ...scheduleActions(schedule, load));
  const pair = (name, value) => [el("dt", { text: name }), el("dd", {}, value)];
  document.getElementById("fields").replaceChildren(
    ...pair("Scheduler", schedule.scheduler),
    ...pair("Trigger", el("span", { class: "mono", text: trigger(schedule) })),
    ...pair("Next run", time(schedule.next_run_at)),
    ...pair("Last run", time(schedule.last_run_at)),
    ...pair("No overlap", schedule.no_overlap ? "yes" : "no"),
    ...pair("Attributes", el("pre", { class: "code", text: pretty(schedule.attributes) })),
  );
  replaceRows(
    document.querySelector("#runs tbody"),
    runs.map((run) =>
      el(
        "tr",
        { "data-task-id": run.task_id },
        el("td", { class: "mono" }, el("a", { href: `/ui/tasks/${run.task_id}`, text: run.task_id })),
        el("td", {}, badge(run.state || "expired")),
        el("td", {}, time(run.scheduled_for)),
        el("td", {}, time(run.fired_at)),
        el("td", { text: run.forced ? "run now" : "trigger" }),
      ),
    ),
    "It has not run yet.",
    5,
  );
}

const started = await startPage({ roles: ["admin"] }).catch(failed);
if (started) every(5, load);
