// What every signed-in page does first: ask who the token is, show what its role may use, and
// offer signing out. Pages call startPage() and get the caller.

import { call, describe, forgetToken, token } from "./api.js";

export async function startPage({ roles = ["admin", "client", "worker"] } = {}) {
  if (!token()) {
    location.replace("/ui/sign-in");
    return null;
  }
  const caller = await call("GET", "/whoami");
  for (const item of document.querySelectorAll("[data-role]")) {
    item.hidden = !item.dataset.role.split(" ").includes(caller.role);
  }
  const current = document.querySelector(`[data-nav="${document.body.dataset.page}"]`);
  if (current) current.setAttribute("aria-current", "page");
  document.getElementById("identity").textContent = `${caller.role} · ${caller.token_id}`;
  document.getElementById("sign-out").addEventListener("click", () => {
    forgetToken();
    location.assign("/ui/sign-in");
  });
  if (!roles.includes(caller.role)) {
    const main = document.getElementById("main");
    for (const child of [...main.children]) if (child.id !== "notice") child.remove();
    const needed = roles.map((role) => `${/^[aeiou]/.test(role) ? "an" : "a"} ${role}`).join(" or ");
    notify(`This page needs ${needed} token; this one is a ${caller.role} token.`, "bad");
    return null;
  }
  return { caller };
}

export function notify(text, tone = "info") {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.dataset.tone = tone;
  notice.hidden = !text;
}

export function failed(error) {
  notify(describe(error), "bad");
}

// Run `refresh` now and every `seconds` while the tab is visible.
export function every(seconds, refresh) {
  let timer = null;
  const tick = async () => {
    timer = null;
    if (document.visibilityState === "visible") {
      try {
        await refresh();
      } catch (error) {
        failed(error);
      }
    }
    timer = setTimeout(tick, seconds * 1000);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && timer !== null) {
      clearTimeout(timer);
      tick();
    }
  });
  tick();
}
