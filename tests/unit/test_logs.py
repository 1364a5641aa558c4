"""Log lines leave stderr once per event-loop turn, never later, and at once outside a loop."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime, timedelta

from taskbroker.logs import TurnFlushedBytesLogger, _UtcIsoTimestamp


class _Stream(io.BytesIO):
    """Counts flushes; ``flushed`` is what a reader of the stream had seen at the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = b""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def test_a_line_logged_outside_an_event_loop_is_flushed_at_once() -> None:
    stream = _Stream()

    TurnFlushedBytesLogger(stream).msg(b'{"event":"a"}')

    assert stream.flushed == b'{"event":"a"}\n'


async def test_the_lines_of_one_loop_turn_leave_in_one_flush_at_its_end() -> None:
    stream = _Stream()
    logger = TurnFlushedBytesLogger(stream)

    logger.msg(b"one")
    logger.info(b"two")
    assert stream.flushes == 0
    await asyncio.sleep(0)

    assert (stream.flushes, stream.flushed) == (1, b"one\ntwo\n")
    logger.msg(b"three")
    await asyncio.sleep(0)
    assert (stream.flushes, stream.flushed) == (2, b"one\ntwo\nthree\n")


def test_timestamps_are_iso_8601_utc_as_structlog_writes_them() -> None:
    before = datetime.now(UTC) - timedelta(microseconds=1)  # datetime rounds, we truncate
    stamped = _UtcIsoTimestamp()(None, "info", {})["timestamp"]
    again = _UtcIsoTimestamp()(None, "info", {})["timestamp"]  # the cached second, reused
    after = datetime.now(UTC)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamped)
    assert before <= datetime.fromisoformat(stamped) <= after
    assert datetime.fromisoformat(stamped) <= datetime.fromisoformat(again) <= after
