import { ApiError, describe, get } from "./api.js";
import { badge, el, isFinal, number, replaceRows, shortId, time } from "./dom.js";
import { failed, notify, startPage } from "./shell.js";
import { followEvents } from "./stream.js";

const PAGE_SIZE = 50;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const tbody = document.querySelector("#tasks tbody");
const params = new URLSearchParams(location.search);
const filter = { scheduler: params.get("scheduler") || "", state: params.get("state") || "" };
const cursors = [];
let cursor = null;
let nextCursor = null;

function summary(task) {
  const attributes = task.attributes || {};
  return attributes.function || attributes.image || attributes.command || Object.keys(attributes)[0] || "—";
}

function row(task) {
  return el(
    "tr",
    { "data-task-id": task.id },
    el("td", { class: "mono" }, el("a", { href: `/ui/tasks/${task.id}`, title: task.id, text: shortId(task.id) })),
    el("td", { "data-field": "state" }, badge(task.state)),
    el("td", { text: task.scheduler }),
    el("td", { class: "mono truncate", title: summary(task), text: summary(task) }),
    el("td", { class: "num", "data-field": "attempts", text: number(task.attempts) }),
    el("td", { class: "num", text: String(task.priority ?? 0) }),
    el("td", {}, time(task.created_at)),
    el("td", { "data-field": "updated" }, time(task.finished_at || task.started_at || task.created_at)),
  );
}

async function load() {
  try {
    const page = await get("/tasks", { scheduler: filter.scheduler, state: filter.state, limit: PAGE_SIZE, cursor });
    nextCursor = page.next_cursor;
    replaceRows(tbody, page.tasks.map(row), cursor ? "No more tasks on this page." : "No tasks match.", 8);
    document.getElementById("page-info").textContent = `Page ${cursors.length + 1}`;
    document.getElementById("next-page").disabled = !nextCursor;
    document.getElementById("prev-page").disabled = cursors.length === 0;
    document.getElementById("first-page").disabled = cursors.length === 0;
  } catch (error) {
    if (error instanceof ApiError && error.status === 422 && filter.state) {
      // An API without retries or retained listings refuses those states: offer them no more.
      notify(
        isFinal(filter.state)
          ? "This API lists live tasks only: open a finished task by its id."
          : `This API does not list ${filter.state} tasks.`,
        "info",
      );
      if (isFinal(filter.state)) document.getElementById("final-states").remove();
      else document.querySelector(`#f-state option[value="${filter.state}"]`)?.remove();
      filter.state = "";
      return load();
    }
    failed(error);
  }
}

function matches(event) {
  return (!filter.scheduler || event.scheduler === filter.scheduler) && (!filter.state || filter.state === event.state);
}

// New tasks appear at the top of the first page; fetched in small batches so a burst of events
// costs a handful of reads, not one per event.
const arriving = new Set();
let flushing = null;
function arrive(taskId) {
  arriving.add(taskId);
  flushing ??= setTimeout(async () => {
    const ids = [...arriving].slice(0, 20);
    arriving.clear();
    flushing = null;
    const found = await Promise.all(ids.map((id) => get(`/task/${id}`).catch(() => null)));
    for (const task of found) {
      if (!task || tbody.querySelector(`[data-task-id="${task.id}"]`) || !matches(task)) continue;
      tbody.querySelector("tr.empty")?.remove();
      tbody.prepend(row(task));
      while (tbody.rows.length > PAGE_SIZE) tbody.lastElementChild.remove();
    }
  }, 300);
}

function onEvent(event) {
  const existing = tbody.querySelector(`[data-task-id="${event.task_id}"]`);
  if (existing) {
    const state = event.state === "requeued" ? "pending" : event.state;
    existing.querySelector('[data-field="state"]').replaceChildren(badge(state));
    existing.querySelector('[data-field="attempts"]').textContent = number(event.attempt);
    existing.querySelector('[data-field="updated"]').replaceChildren(time(event.at));
    existing.classList.add("changed");
    setTimeout(() => existing.classList.remove("changed"), 1200);
  } else if (cursor === null && event.state === "pending" && matches(event)) {
    arrive(event.task_id);
  }
}

function setLive(state) {
  document.getElementById("live-dot").dataset.state = state;
  const labels = { live: "Live", refused: "Not live: this token may not follow these events" };
  document.getElementById("live-state").textContent = labels[state] || "Reconnecting…";
}

async function find(text) {
  const error = document.getElementById("find-error");
  error.hidden = true;
  try {
    if (UUID.test(text)) {
      await get(`/task/${text}`);
      location.assign(`/ui/tasks/${text}`);
      return;
    }
    if (!filter.scheduler) throw new Error("Choose a scheduler first: idempotency keys are per scheduler.");
    const task = await get("/tasks/by-key", { scheduler: filter.scheduler, key: text });
    location.assign(`/ui/tasks/${task.id}`);
  } catch (problem) {
    error.textContent = problem instanceof ApiError && problem.status === 404 ? `No task found for “${text}”.` : describe(problem);
    error.hidden = false;
  }
}

const started = await startPage().catch(failed);
if (started) {
  const schedulerSelect = document.getElementById("f-scheduler");
  for (const scheduler of await get("/schedulers").catch(() => [])) {
    schedulerSelect.append(el("option", { value: scheduler.name, text: scheduler.name }));
  }
  schedulerSelect.value = filter.scheduler;
  document.getElementById("f-state").value = filter.state;
  document.getElementById("filters").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const query = new URLSearchParams();
    if (schedulerSelect.value) query.set("scheduler", schedulerSelect.value);
    if (document.getElementById("f-state").value) query.set("state", document.getElementById("f-state").value);
    location.assign(`/ui/tasks${query.size ? `?${query}` : ""}`);
  });
  document.getElementById("find").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const text = document.getElementById("find-id").value.trim();
    if (text) find(text);
  });
  document.getElementById("next-page").addEventListener("click", () => {
    cursors.push(cursor);
    cursor = nextCursor;
    load();
  });
  document.getElementById("prev-page").addEventListener("click", () => {
    cursor = cursors.pop() ?? null;
    load();
  });
  document.getElementById("first-page").addEventListener("click", () => {
    cursors.length = 0;
    cursor = null;
    load();
  });
  await load();
  followEvents("/events", onEvent, { onStatus: setLive, query: { scheduler: filter.scheduler } });
}
