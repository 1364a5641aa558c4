"""Fan-out of the event stream to the SSE listeners of one API process.

One reader per process follows ``{prefix}:events`` with XREAD BLOCK and hands each event to the
listeners that want it, so a thousand open streams cost one Redis connection, not a thousand.
The reader runs only while someone listens. Nothing depends on it for completeness: a listener
reads its history from the stream itself after subscribing, and a listener the hub drops (it
fell behind, Redis went away, the server is stopping) ends its stream, and its client resumes
with ``Last-Event-ID`` from the stream, which still holds what was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog

from taskbroker.errors import TaskbrokerError
from taskbroker.event_models import TaskEvent
from taskbroker.events import EventLog

log = structlog.get_logger("taskbroker.api")

BLOCK_MS = 2000
"""How long one XREAD waits; below the Redis client's socket timeout."""
BUFFER_LIMIT = 10_000
"""Events one listener may have waiting before it is dropped (its client then resumes)."""


class SubscriptionEnded(Exception):
    """The hub dropped this listener; ``reason`` says why."""


class Subscription:
    """The events one listener wants, buffered until its stream writes them."""

    def __init__(self, wants: Callable[[TaskEvent], bool], limit: int = BUFFER_LIMIT) -> None:
        self.wants = wants
        self._limit = limit
        self._buffer: deque[TaskEvent] = deque()
        self._wake = asyncio.Event()
        self.ended: str | None = None

    def offer(self, event: TaskEvent) -> None:
        if self.ended is not None:
            return
        if len(self._buffer) >= self._limit:
            self.end("the listener fell behind")
            return
        self._buffer.append(event)
        self._wake.set()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._wake.set()

    async def next(self, heartbeat: float) -> TaskEvent | None:
        """The next event, or None if none came within ``heartbeat`` s (time for a heartbeat).

        Raises SubscriptionEnded once the hub has dropped this listener."""
        if not self._buffer and self.ended is None:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), heartbeat)
        if self._buffer:
            return self._buffer.popleft()
        if self.ended is not None:
            raise SubscriptionEnded(self.ended)
        return None


class EventHub:
    """Follows the event stream while any listener is subscribed."""

    def __init__(self, events: EventLog, *, block_ms: int = BLOCK_MS) -> None:
        self.events = events
        self._block_ms = block_ms
        self._subscriptions: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._stopping = False

    @property
    def listeners(self) -> int:
        return len(self._subscriptions)

    async def start(self) -> None:
        """Make sure the reader runs; StoreUnavailable if Redis cannot be reached.

        The reader starts after the newest entry at this moment: a subscriber registered before
        this call reads everything older from the stream itself."""
        async with self._starting:
            if self._reader is None or self._reader.done():
                position = await self.events.last_id()
                self._reader = asyncio.create_task(self._follow(position), name="event-hub-reader")

    async def subscribe(self, wants: Callable[[TaskEvent], bool]) -> Subscription:
        if self._stopping:
            raise SubscriptionEnded("the server is stopping")
        subscription = Subscription(wants)
        self._subscriptions.add(subscription)
        try:
            await self.start()
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if not self._subscriptions and self._reader is not None:
            self._reader.cancel()
            self._reader = None

    def stop(self) -> None:
        """End every stream now (the server is shutting down; clients resume elsewhere)."""
        self._stopping = True
        for subscription in list(self._subscriptions):
            subscription.end("the server is stopping")

    async def close(self) -> None:
        self.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _follow(self, position: str) -> None:
        try:
            while True:
                batch = await self.events.wait_after(position, block_ms=self._block_ms)
                for event in batch:
                    position = event.id
                    for subscription in list(self._subscriptions):
                        if subscription.wants(event):
                            subscription.offer(event)
        except TaskbrokerError as exc:
            # Mid-stream outage: end every stream; clients resume once Redis is back.
            log.warning("events.reader_failed", error=str(exc), listeners=len(self._subscriptions))
            for subscription in list(self._subscriptions):
                subscription.end("Redis is unreachable")
