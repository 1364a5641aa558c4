"""How many tasks finished, per scheduler and minute, over the last hour: the overview's counts of
completed and failed tasks and its throughput chart, folded from the event stream.

Counting finished tasks from their records would scan every retained task; the event stream
already holds each final state once, in time order. So one tally per API process reads the
stream incrementally: the first reading goes back one hour, every later one reads only the
events since the previous one, and minutes older than the hour are dropped. However many
dashboards ask, one reading runs at a time (a lock), and a reading younger than ``FRESH_SECONDS``
is answered as it is: 50 open overviews cost what one does. The figures cover what the stream
retains (``TASKBROKER_EVENTS_RETENTION``, ``TASKBROKER_EVENTS_MAX_LENGTH``): with a shorter
retention than an hour the older minutes are simply missing.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from taskbroker.event_models import START, EventKind, TaskEvent

WINDOW_MINUTES = 60
READ_BATCH = 2000
FRESH_SECONDS = 1.0
"""A reading this recent is reused: the overview refreshes every few seconds, per dashboard."""


@dataclass
class MinuteCounts:
    """Final states of one scheduler's tasks in one minute."""

    complete: int = 0
    failed: int = 0
    other: int = 0
    """Aborted and timed out: finished, but neither a success nor a failure of the task's code."""


@dataclass(frozen=True)
class SchedulerTally:
    completed_5m: int
    failed_5m: int
    completed_60m: int
    failed_60m: int
    throughput: list[int] = field(default_factory=list)
    """Tasks finished (any final state) in each of the last 15 minutes, oldest first."""


class EventReader(Protocol):
    """What the tally reads: taskbroker.events.EventLog's ``read_after``."""

    def read_after(self, after: str, *, count: int = ...) -> Awaitable[list[TaskEvent]]: ...


class FinishedTally:
    def __init__(self, events: EventReader) -> None:
        self._events = events
        self._position: str | None = None
        self._minutes: dict[str, dict[int, MinuteCounts]] = defaultdict(dict)
        self._lock = asyncio.Lock()
        self._read_at = 0.0

    async def read(self, now: float | None = None) -> dict[str, SchedulerTally]:
        """The tally per scheduler that finished a task within the hour. StoreUnavailable when
        Redis is down (the tally keeps what it had, and resumes where it was)."""
        async with self._lock:
            current = time.time() if now is None else now
            if current - self._read_at >= FRESH_SECONDS:
                await self._catch_up(current)
                self._read_at = current
            return self._summary(int(current // 60))

    async def _catch_up(self, now: float) -> None:
        oldest_minute = int(now // 60) - WINDOW_MINUTES + 1
        if self._position is None:
            # The first reading starts an hour back: "(<ms>-0" excludes nothing of that minute.
            start_ms = max(oldest_minute * 60_000 - 1, 0)
            self._position = f"{start_ms}-0" if start_ms else START
        while True:
            batch = await self._events.read_after(self._position, count=READ_BATCH)
            for event in batch:
                if event.state.is_final:
                    minute = int(event.at.timestamp() // 60)
                    counts = self._minutes[event.scheduler].setdefault(minute, MinuteCounts())
                    if event.state is EventKind.COMPLETE:
                        counts.complete += 1
                    elif event.state is EventKind.FAILED:
                        counts.failed += 1
                    else:
                        counts.other += 1
            if batch:
                self._position = batch[-1].id
            if len(batch) < READ_BATCH:
                break
        for scheduler in list(self._minutes):
            minutes = self._minutes[scheduler]
            for minute in [m for m in minutes if m < oldest_minute]:
                del minutes[minute]
            if not minutes:
                del self._minutes[scheduler]

    def _summary(self, this_minute: int) -> dict[str, SchedulerTally]:
        tallies = {}
        for scheduler, minutes in self._minutes.items():

            def within(span: int, minutes: dict[int, MinuteCounts] = minutes) -> list[MinuteCounts]:
                return [c for m, c in minutes.items() if m > this_minute - span]

            last_5, last_60 = within(5), within(WINDOW_MINUTES)
            throughput = []
            for minute in range(this_minute - 14, this_minute + 1):
                counts = minutes.get(minute)
                throughput.append(counts.complete + counts.failed + counts.other if counts else 0)
            tallies[scheduler] = SchedulerTally(
                completed_5m=sum(c.complete for c in last_5),
                failed_5m=sum(c.failed for c in last_5),
                completed_60m=sum(c.complete for c in last_60),
                failed_60m=sum(c.failed for c in last_60),
                throughput=throughput,
            )
        return tallies
