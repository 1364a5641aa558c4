import { call, describe, get, post } from "./api.js";
import { badge, el, replaceRows, time } from "./dom.js";
import { every, failed, notify, startPage } from "./shell.js";

export function trigger(schedule) {
  if (schedule.cron) return `cron ${schedule.cron}`;
  const args = Object.entries(schedule.trigger_kwargs || {}).map(([name, value]) => `${name}=${value}`).join(" ");
  return `${schedule.trigger || "—"} ${args}`.trim() + (schedule.timezone && schedule.timezone !== "UTC" ? ` (${schedule.timezone})` : "");
}

export function enabledBadge(schedule) {
  return schedule.enabled ? el("span", { class: "badge state-active", text: "enabled" }) : el("span", { class: "badge state-paused", text: "paused" });
}

// The buttons for one schedule; `after` runs once an action succeeded.
export function scheduleActions(schedule, after) {
  const act = (label, action, tone = "") =>
    el("button", {
      type: "button",
      class: `button small ${tone}`,
      "aria-label": `${label} ${schedule.name}`,
      onclick: async (clicked) => {
        clicked.target.disabled = true;
        try {
          const message = await action();
          if (message) notify(message, "ok");
          await after();
        } catch (error) {
          notify(describe(error), "bad");
        } finally {
          clicked.target.disabled = false;
        }
      },
      text: label,
    });
  return [
    schedule.enabled
      ? act("Pause", async () => {
          await call("PATCH", `/schedules/${schedule.id}`, { body: { enabled: false } });
          return `${schedule.name} paused.`;
        })
      : act("Resume", async () => {
          await call("PATCH", `/schedules/${schedule.id}`, { body: { enabled: true } });
          return `${schedule.name} resumed.`;
        }),
    act("Run now", async () => {
      const run = await post(`/schedules/${schedule.id}/run`);
      return `${schedule.name} ran: task ${run.id}.`;
    }),
    act(
      "Delete",
      async () => {
        if (!confirm(`Delete the schedule ${schedule.name}? Its tasks are kept.`)) return null;
        await call("DELETE", `/schedules/${schedule.id}`);
        return `${schedule.name} deleted.`;
      },
      "danger",
    ),
  ];
}

async function load() {
  const schedules = await get("/schedules");
  replaceRows(
    document.querySelector("#schedules tbody"),
    schedules.map((schedule) =>
      el(
        "tr",
        { "data-schedule-id": schedule.id, "data-name": schedule.name },
        el("th", { scope: "row" }, el("a", { href: `/ui/schedules/${schedule.id}`, text: schedule.name })),
        el("td", { "data-field": "enabled" }, enabledBadge(schedule)),
        el("td", { text: schedule.scheduler }),
        el("td", { class: "mono", text: trigger(schedule) }),
        el("td", {}, time(schedule.next_run_at)),
        el(
          "td",
          {},
          time(schedule.last_run_at),
          schedule.last_task_id ? [" ", el("a", { href: `/ui/tasks/${schedule.last_task_id}` }, badge(schedule.last_state || "unknown"))] : null,
        ),
        el("td", { class: "actions" }, scheduleActions(schedule, load)),
      ),
    ),
    "No schedules yet: create one with POST /schedules or `taskbroker schedules load`.",
    7,
  );
}

if (document.body.dataset.page === "schedules") {
  const started = await startPage({ roles: ["admin"] }).catch(failed);
  if (started) every(10, load);
}
