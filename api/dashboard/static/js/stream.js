// Server-Sent Events read with fetch(), not EventSource: EventSource cannot send an
// Authorization header, and the token must never go into a URL. The stream is resumed as
// EventSource would: after a drop, the next request carries Last-Event-ID, so nothing is missed.

import { signInAgain, token } from "./api.js";

// Follows `path` until stop() is called; onEvent(event) gets each TaskEvent (the `data`),
// onStatus("live" | "reconnecting" | "ended" | "refused") reports the connection. With `endsByItself` (one
// task's stream, which ends after its final event) a clean end is the end, not a drop.
export function followEvents(path, onEvent, { onStatus = () => {}, endsByItself = false, query } = {}) {
  let lastEventId = null;
  let retryMs = 2000;
  let stopped = false;
  const controller = new AbortController();

  async function connect() {
    while (!stopped) {
      try {
        const target = new URL(path, location.origin);
        for (const [name, value] of Object.entries(query || {})) {
          if (value) target.searchParams.set(name, value);
        }
        const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token()}` };
        if (lastEventId) headers["Last-Event-ID"] = lastEventId;
        const response = await fetch(target, {
          headers,
          signal: controller.signal,
          credentials: "omit",
          cache: "no-store",
        });
        if (response.status === 401) {
          signInAgain();
          return;
        }
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          onStatus("refused"); // not this token's to follow: asking again would not change that
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onStatus("live");
        await read(response.body);
        if (endsByItself) {
          onStatus("ended");
          return;
        }
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
      }
      onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }

  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let fields = { data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          dispatch(fields);
          fields = { data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const raw = colon < 0 ? "" : line.slice(colon + 1);
          const text = raw.startsWith(" ") ? raw.slice(1) : raw;
          if (name === "data") fields.data.push(text);
          else if (name === "id") fields.id = text;
          else if (name === "retry" && /^\d+$/.test(text)) retryMs = Number(text);
        }
      }
    }
  }

  function dispatch(fields) {
    if (fields.id) lastEventId = fields.id;
    if (!fields.data.length) return;
    try {
      onEvent(JSON.parse(fields.data.join("\n")));
    } catch {
      // Not a TaskEvent: nothing to show.
    }
  }

  connect();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
