// Building the page from data: elements with text, never HTML strings, so no value the API
// returns (a task's attributes, an error message) can become markup.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function replaceRows(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    tbody.append(el("tr", { class: "empty" }, el("td", { colspan: String(columns), text: emptyText })));
  }
}

const FINAL = new Set(["complete", "failed", "aborted", "timeout"]);

// A state badge: colour and the state's name, so it reads without colour too.
export function badge(state) {
  return el("span", { class: `badge state-${state}`, text: state || "unknown" });
}

export function isFinal(state) {
  return FINAL.has(state);
}

export function time(value) {
  if (!value) return el("span", { class: "muted", text: "—" });
  const at = new Date(value);
  return el("time", { datetime: at.toISOString(), title: at.toISOString() }, relative(at));
}

export function relative(at) {
  const seconds = Math.round((Date.now() - at.getTime()) / 1000);
  const future = seconds < 0;
  const span = Math.abs(seconds);
  let text;
  if (span < 5) text = "just now";
  else if (span < 60) text = `${span} s`;
  else if (span < 3600) text = `${Math.round(span / 60)} min`;
  else if (span < 86400) text = `${Math.round(span / 3600)} h`;
  else return at.toISOString().slice(0, 16).replace("T", " ");
  if (text === "just now") return text;
  return future ? `in ${text}` : `${text} ago`;
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function number(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en");
}

export function pretty(value) {
  return value === null || value === undefined ? "—" : JSON.stringify(value, null, 2);
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    flash(button, "Copied");
  } catch {
    flash(button, "Select and copy");
  }
}

function flash(button, text) {
  const before = button.textContent;
  button.textContent = text;
  setTimeout(() => {
    button.textContent = before;
  }, 1500);
}
