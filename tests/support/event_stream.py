"""Reading a server-sent event stream of the API message by message, as a listener would."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from taskbroker.client.sse import SseDecoder
from taskbroker.event_models import TaskEvent


class OpenStream:
    """An SSE response read message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self._decoder = SseDecoder()

    async def next_event(self) -> TaskEvent | None:
        """The next event, or None when the server ended the stream."""
        async for line in self._lines:
            message = self._decoder.feed(line)
            if message is not None:
                event = TaskEvent.model_validate_json(message.data)
                assert message.id == event.id
                assert message.event == event.state.value
                return event
        return None

    async def events(self, count: int) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        for _ in range(count):
            event = await self.next_event()
            assert event is not None, f"the stream ended after {found}"
            found.append(event)
        return found

    async def rest(self) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        while (event := await self.next_event()) is not None:
            found.append(event)
        return found


def stream(http: httpx.AsyncClient, path: str, **kwargs: Any) -> AbstractAsyncContextManager[httpx.Response]:
    """``http.stream("GET", path, ...)``: use as ``async with stream(...) as response``."""
    return http.stream("GET", path, **kwargs)
