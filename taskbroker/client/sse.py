"""Reading a text/event-stream line by line, as the HTML standard's EventSource does."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SseMessage:
    id: str | None
    event: str
    data: str


@dataclass(slots=True)
class SseDecoder:
    """Feed it lines (without their line break); it returns a message at each blank line."""

    _id: str | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage(self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return message
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
