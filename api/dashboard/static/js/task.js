import { ApiError, describe, get, post } from "./api.js";
import { badge, copyText, el, isFinal, pretty, time } from "./dom.js";
import { failed, notify, startPage } from "./shell.js";
import { followEvents } from "./stream.js";

const taskId = document.body.dataset.taskId;
let task = null;
let caller = null;

function field(name, value) {
  return [el("dt", { text: name }), el("dd", {}, value)];
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

// The request that would schedule this task again; the token stays a variable, never the value.
function curl(current) {
  const body = { scheduler: current.scheduler, attributes: current.attributes };
  if (current.priority) body.priority = current.priority;
  if (current.callback_url) body.callback_url = current.callback_url;
  return [
    `curl -X POST ${shellQuote(`${location.origin}/task/schedule`)} \\`,
    `  -H "Authorization: Bearer $TASKBROKER_TOKEN" \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify(body))}`,
  ].join("\n");
}

function render(current) {
  task = current;
  document.getElementById("task-state").replaceChildren(badge(current.state));
  document.getElementById("fields").replaceChildren(
    ...field("Id", el("span", { class: "mono", text: current.id })),
    ...field("Scheduler", el("a", { href: `/ui/tasks?scheduler=${encodeURIComponent(current.scheduler)}`, text: current.scheduler })),
    ...field("State", badge(current.state)),
    ...field("Attempts", String(current.attempts)),
    ...field("Priority", String(current.priority ?? 0)),
    ...field("Created", time(current.created_at)),
    ...field("Started", time(current.started_at)),
    ...field("Finished", time(current.finished_at)),
    ...field("Timeout", time(current.timeout)),
    ...field("Owner", el("span", { class: "mono", text: current.owner || "—" })),
    ...field("Idempotency key", el("span", { class: "mono", text: current.key || "—" })),
    ...field("Callback", el("span", { class: "mono", text: current.callback_url || "—" })),
  );
  document.getElementById("attributes").textContent = pretty(current.attributes);
  document.getElementById("result").textContent = pretty(current.result);
  document.getElementById("error-card").hidden = !current.error;
  document.getElementById("error").textContent = current.error || "";
  document.getElementById("curl").textContent = curl(current);
  const schedules = caller.role === "admin" || caller.role === "client";
  document.getElementById("abort").hidden = !schedules || isFinal(current.state);
  // A re-run is for a task whose run did not succeed; a complete one is refused (409).
  const rerunnable = ["failed", "timeout", "aborted"].includes(current.state);
  document.getElementById("retry").hidden = !schedules || !rerunnable;
}

function addEvent(event) {
  const list = document.getElementById("timeline");
  if (list.querySelector(`[data-event-id="${event.id}"]`)) return;
  list.append(
    el(
      "li",
      { "data-event-id": event.id, "data-state": event.state },
      badge(event.state),
      el("span", { class: "muted", text: ` attempt ${event.attempt}` }),
      el("span", { class: "when" }, time(event.at)),
    ),
  );
}

// The task's events: its history, then live ones until its final state (the stream ends there;
// a retry makes it live again, and follow() is called anew).
let stream = null;
function follow() {
  stream?.stop();
  const live = document.getElementById("timeline-live");
  stream = followEvents(
    `/task/${taskId}/events`,
    (event) => {
      addEvent(event);
      if (event.state !== task.state) refresh();
    },
    {
      endsByItself: true,
      onStatus: (state) => {
        live.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "";
      },
    },
  );
}

async function refresh() {
  try {
    render(await get(`/task/${taskId}`));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      notify("No such task: it never existed, or it finished longer ago than the retention time.", "bad");
    } else failed(error);
  }
}

const started = await startPage().catch(failed);
if (started) {
  ({ caller } = started);
  await refresh();
  if (task) follow();
  document.getElementById("abort").addEventListener("click", async (clicked) => {
    if (!confirm("Abort this task? A running task is cancelled by its consumer.")) return;
    clicked.target.disabled = true;
    try {
      render(await post(`/task/${taskId}/abort`));
      notify("Task aborted.", "ok");
    } catch (error) {
      notify(describe(error), "bad");
    } finally {
      clicked.target.disabled = false;
    }
  });
  document.getElementById("retry").addEventListener("click", async (clicked) => {
    clicked.target.disabled = true;
    try {
      const retried = await post(`/task/${taskId}/retry`);
      if (retried && retried.id && retried.id !== taskId) location.assign(`/ui/tasks/${retried.id}`);
      else {
        render(retried);
        follow();
      }
      notify("Task scheduled again.", "ok");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 405 || error.status === 404)) clicked.target.hidden = true;
      notify(describe(error), "bad");
    } finally {
      clicked.target.disabled = false;
    }
  });
  document.getElementById("copy-curl").addEventListener("click", (clicked) => {
    if (task) copyText(curl(task), clicked.target);
  });
}
