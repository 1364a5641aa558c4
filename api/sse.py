"""Server-Sent Events framing (text/event-stream), as browsers' EventSource and our client read it."""

from __future__ import annotations

from taskbroker.event_models import TaskEvent

MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to; a buffered event stream is a dead one.
    "X-Accel-Buffering": "no",
}
HEARTBEAT = ": keepalive\n\n"
RETRY = "retry: 2000\n\n"
"""Sent first: a reconnecting EventSource waits 2 s, then resumes with Last-Event-ID."""


def message(event: TaskEvent) -> str:
    """``id`` is the stream entry id (the resume point), ``event`` the state, ``data`` the JSON."""
    return f"id: {event.id}\nevent: {event.state.value}\ndata: {event.model_dump_json()}\n\n"
