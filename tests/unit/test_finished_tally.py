"""The overview's finished counts: folded from the event stream, an hour back at first, then only
what is new; minutes older than the hour drop out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from taskbroker.api.finished_tally import FinishedTally
from taskbroker.event_models import EventKind, TaskEvent, parse_event_id

NOW = 1_800_000_030.0
"""Half a minute into a minute: 10 s earlier is this minute, 60 s earlier the one before."""


class Stream:
    """An event stream in memory, read as EventLog.read_after reads Redis."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.reads: list[str] = []

    def add(self, at: float, state: EventKind, scheduler: str = "s") -> None:
        event_id = f"{int(at * 1000)}-{len(self.events)}"
        self.events.append(
            TaskEvent(
                id=event_id,
                task_id=uuid.uuid4(),
                scheduler=scheduler,
                state=state,
                attempt=1,
                at=datetime.fromtimestamp(at, UTC),
            )
        )

    async def read_after(self, after: str, *, count: int = 500) -> list[TaskEvent]:
        self.reads.append(after)
        floor = parse_event_id(after)
        return [e for e in self.events if parse_event_id(e.id) > floor][:count]


async def test_counts_completed_and_failed_in_the_last_5_and_60_minutes_per_scheduler() -> None:
    stream = Stream()
    stream.add(NOW - 2 * 3600, EventKind.COMPLETE)  # too old
    stream.add(NOW - 30 * 60, EventKind.COMPLETE)
    stream.add(NOW - 30 * 60, EventKind.FAILED)
    stream.add(NOW - 60, EventKind.COMPLETE)
    stream.add(NOW - 60, EventKind.RUNNING)  # not final: not counted
    stream.add(NOW - 10, EventKind.ABORTED)
    stream.add(NOW - 10, EventKind.COMPLETE, scheduler="other")

    tallies = await FinishedTally(stream).read(now=NOW)

    s = tallies["s"]
    assert (s.completed_5m, s.failed_5m, s.completed_60m, s.failed_60m) == (1, 0, 2, 1)
    assert len(s.throughput) == 15
    assert s.throughput[-1] == 1  # the aborted task, this minute
    assert s.throughput[-2] == 1  # the completed one, a minute ago
    assert sum(s.throughput) == 2
    assert tallies["other"].completed_5m == 1


async def test_a_later_reading_reads_only_new_events_and_forgets_minutes_past_the_hour() -> None:
    stream = Stream()
    stream.add(NOW - 50 * 60, EventKind.COMPLETE)
    tally = FinishedTally(stream)
    assert (await tally.read(now=NOW))["s"].completed_60m == 1
    stream.add(NOW + 5, EventKind.FAILED)

    later = await tally.read(now=NOW + 11 * 60)

    assert stream.reads[-1] == stream.events[0].id  # resumed after what it had read
    assert later["s"].completed_60m == 0  # 61 minutes old now
    assert later["s"].failed_60m == 1


async def test_a_reading_within_a_second_of_the_last_is_answered_without_reading() -> None:
    stream = Stream()
    tally = FinishedTally(stream)
    await tally.read(now=NOW)
    reads = len(stream.reads)

    await tally.read(now=NOW + 0.5)

    assert len(stream.reads) == reads
