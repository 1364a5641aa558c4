"""The client's wire-level pieces: SSE framing, error mapping, event ids."""

from __future__ import annotations

import pytest

from taskbroker.client import ApiError, Conflict, InvalidRequest, NotFound, RateLimited, Unavailable
from taskbroker.client.calls import TaskSpec, batches
from taskbroker.client.errors import error_for
from taskbroker.client.sse import SseDecoder, SseMessage
from taskbroker.event_models import InvalidEventId, parse_event_id


def _feed(lines: list[str]) -> list[SseMessage]:
    decoder = SseDecoder()
    return [m for line in lines if (m := decoder.feed(line)) is not None]


def test_sse_messages_end_at_a_blank_line_and_keep_their_id_event_and_data() -> None:
    messages = _feed(["retry: 2000", "", "id: 1-0", "event: running", "data: {}", "", ": keepalive", ""])
    assert messages == [SseMessage("1-0", "running", "{}")]


def test_sse_data_lines_join_with_newlines_and_the_last_id_carries_over() -> None:
    messages = _feed(["id: 5-1", "data: a", "data:b", "", "data: c", ""])
    assert messages == [SseMessage("5-1", "message", "a\nb"), SseMessage("5-1", "message", "c")]


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, NotFound), (409, Conflict), (422, InvalidRequest), (400, InvalidRequest), (418, ApiError)],
)
def test_each_error_status_has_its_exception_naming_status_and_detail(status: int, kind: type) -> None:
    error = error_for(status, "what went wrong")
    assert type(error) is kind
    assert str(error) == f"HTTP {status}: what went wrong"
    assert error.status_code == status


def test_retry_after_is_read_from_429_and_503() -> None:
    assert isinstance(limited := error_for(429, "slow down", "7"), RateLimited)
    assert limited.retry_after == 7.0
    assert isinstance(down := error_for(503, "Redis is unreachable", "2"), Unavailable)
    assert down.retry_after == 2.0


@pytest.mark.parametrize("bad", ["", "1", "a-1", "1-2-3", " 1-0"])
def test_event_ids_other_than_ms_dash_seq_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEventId):
        parse_event_id(bad)


def test_event_ids_compare_numerically() -> None:
    assert parse_event_id("10-0") > parse_event_id("9-5")
    assert parse_event_id("9-10") > parse_event_id("9-9")


def test_schedule_many_splits_into_batches_within_the_api_limit() -> None:
    specs = [TaskSpec("a", {}) for _ in range(2500)]
    assert [len(b) for b in batches(specs, 1000)] == [1000, 1000, 500]
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(specs, 1001))
