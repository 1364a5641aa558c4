"""The pydantic models that cross process boundaries: HTTP bodies, Redis records, CLI output."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from taskbroker.names import RUNTIME_NAME_PATTERN, SCHEDULER_NAME_PATTERN


def _unicode(value: str) -> str:
    """JSON text may escape lone surrogates (\\ud800) that no UTF-8 store can hold: refuse them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains a lone surrogate, which is not valid Unicode") from None
    return value


UnicodeText = Annotated[str, AfterValidator(_unicode)]
"""Free text the API accepts and stores."""


class TaskState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"
    TIMEOUT = "timeout"

    @property
    def is_final(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.RUNNING)


LIVE_STATES = (TaskState.PENDING, TaskState.RUNNING)


def _require_aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone, e.g. 2026-01-01T12:00:00Z")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware_utc)]
SchedulerName = Annotated[str, Field(pattern=SCHEDULER_NAME_PATTERN, examples=["default"])]


class Task(BaseModel):
    """A transient unit of work: lives in Redis until it is final and its retention has passed."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    scheduler: str
    attributes: dict[str, Any]
    timeout: datetime
    state: TaskState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    result: Any = None
    error: str | None = None
    owner: str | None = None
    """The id of the API token that scheduled the task: clients see and abort only their own."""
    priority: int = 0
    """0 (lowest, the default) to 9: of a scheduler's waiting tasks, the highest goes first."""
    key: str | None = None
    """The idempotency key it was scheduled with: no second live task of its scheduler has it."""
    callback_url: str | None = None
    """Where its final state is POSTed (README, "Webhooks")."""


class SchedulerDefinition(BaseModel):
    """What `POST /scheduler` registers: a named queue and the runtime its consumers use."""

    model_config = ConfigDict(extra="forbid")

    name: SchedulerName
    runtime: Annotated[str, Field(pattern=RUNTIME_NAME_PATTERN, examples=["inline"])] = "inline"
    description: Annotated[UnicodeText, Field(max_length=1000)] = ""


class SchedulerStatus(SchedulerDefinition):
    """A scheduler with the live figures an operator scales by."""

    messages: int | None = Field(
        description="Messages waiting in the queue; null when RabbitMQ is unreachable."
    )
    consumers: int | None = Field(
        description="Consumers attached to the queue; null when RabbitMQ is unreachable."
    )
    live_tasks: int


def utcnow() -> datetime:
    return datetime.now(UTC)
