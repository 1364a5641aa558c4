"""Task events as they cross the wire: the ``TaskEvent`` an SSE message carries and the form of
its id (a Redis stream entry id, the resume point of ``Last-Event-ID``).

The client and the API both import these; reading them from Redis is taskbroker.events, which
imports them from here, so that the client never loads the store.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from taskbroker.errors import TaskbrokerError

EVENT_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
ID_PART_MAX = 2**64 - 1
"""Both parts of a Redis stream id are unsigned 64-bit: 20 digits can say more than Redis reads."""
START = "0-0"
"""The id before every event: resuming after it replays everything still retained."""
LAST = (ID_PART_MAX, ID_PART_MAX)
"""The highest id there can be: nothing ever comes after it."""


class EventKind(enum.StrEnum):
    """A task's state after the change, or ``requeued``: its consumer was lost and it is pending
    again, to run once more. ``delayed`` carries a ``reason`` (delay, retry or manual) and its
    ``not_before``; ``retried``: a final task was re-run by hand and is pending."""

    DELAYED = "delayed"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    REQUEUED = "requeued"
    RETRIED = "retried"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({EventKind.COMPLETE, EventKind.FAILED, EventKind.ABORTED, EventKind.TIMEOUT})


class DelayReason(enum.StrEnum):
    DELAY = "delay"
    RETRY = "retry"
    MANUAL = "manual"


class TaskEvent(BaseModel):
    """One state change of one task (the ``data`` of an SSE message)."""

    model_config = ConfigDict(frozen=True)

    id: Annotated[str, Field(pattern=EVENT_ID_PATTERN, description="Stream entry id: resume after it.")]
    task_id: UUID
    scheduler: str
    state: EventKind
    attempt: int
    at: datetime
    owner: str | None = Field(default=None, description="Id of the token that scheduled the task.")
    reason: DelayReason | None = Field(
        default=None, description="Of a `delayed` event: why (a delay asked for, a retry, by hand)."
    )
    not_before: datetime | None = Field(default=None, description="Of a `delayed` event: when it is due.")


class InvalidEventId(TaskbrokerError, ValueError):
    """A resume point that is not a stream entry id. A ValueError too, so that a validator of a
    request parameter that raises it is the request's 422."""


def parse_event_id(value: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a comparable pair; InvalidEventId for anything else, including a part
    beyond 64 bits (Redis refuses those: checked here, before any command carries one)."""
    if not _EVENT_ID.match(value):
        raise InvalidEventId(f"event id {value!r} is not one this API sent (expected <ms>-<seq>)")
    ms, _, seq = value.partition("-")
    parsed = int(ms), int(seq)
    if max(parsed) > ID_PART_MAX:
        raise InvalidEventId(
            f"event id {value!r} is not one this API sent: each part of <ms>-<seq> is a 64-bit "
            f"unsigned number (at most {ID_PART_MAX})"
        )
    return parsed
