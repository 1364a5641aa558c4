import { call, describe, get, post } from "./api.js";
import { copyText, el, replaceRows, time } from "./dom.js";
import { failed, notify, startPage } from "./shell.js";

function status(record) {
  if (record.expires_at && new Date(record.expires_at) <= new Date()) return el("span", { class: "badge state-failed", text: "expired" });
  return el("span", { class: "badge state-active", text: "active" });
}

async function load() {
  const records = await get("/tokens");
  replaceRows(
    document.querySelector("#tokens tbody"),
    records.map((record) =>
      el(
        "tr",
        { "data-token-id": record.id },
        el("td", { class: "mono", text: record.id }),
        el("td", { text: record.name || "—" }),
        el("td", {}, el("span", { class: `badge role-${record.role}`, text: record.role })),
        el("td", { text: record.schedulers ? record.schedulers.join(", ") : "all" }),
        el("td", {}, time(record.created_at)),
        el("td", {}, time(record.expires_at)),
        el("td", {}, status(record)),
        el(
          "td",
          { class: "actions" },
          el("button", {
            type: "button",
            class: "button small danger",
            "aria-label": `Revoke ${record.id}`,
            text: "Revoke",
            onclick: async () => {
              if (!confirm(`Revoke ${record.name || record.id}? It stops working at once.`)) return;
              try {
                await call("DELETE", `/token/${record.id}`);
                notify(`Token ${record.id} revoked.`, "ok");
                await load();
              } catch (error) {
                notify(describe(error), "bad");
              }
            },
          }),
        ),
      ),
    ),
    "No stored tokens (the bootstrap admin token is not listed).",
    8,
  );
}

const started = await startPage({ roles: ["admin"] }).catch(failed);
if (started) {
  await load().catch(failed);
  const form = document.getElementById("create-token");
  const error = document.getElementById("create-error");
  form.addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    error.hidden = true;
    const data = new FormData(form);
    const schedulers = String(data.get("schedulers") || "").split(",").map((name) => name.trim()).filter(Boolean);
    const body = { role: data.get("role"), name: String(data.get("name") || "") };
    if (schedulers.length) body.schedulers = schedulers;
    try {
      const created = await post("/token", body);
      document.getElementById("secret-value").textContent = created.token;
      document.getElementById("secret").hidden = false;
      document.getElementById("secret-value").focus();
      form.reset();
      await load();
    } catch (problem) {
      error.textContent = describe(problem);
      error.hidden = false;
    }
  });
  document.getElementById("copy-secret").addEventListener("click", (clicked) => copyText(document.getElementById("secret-value").textContent, clicked.target));
  document.getElementById("hide-secret").addEventListener("click", () => {
    document.getElementById("secret-value").textContent = "";
    document.getElementById("secret").hidden = true;
  });
}
