"""The pydantic models that cross process boundaries: HTTP bodies, Redis records, CLI output."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from taskbroker.names import RUNTIME_NAME_PATTERN, SCHEDULER_NAME_PATTERN
from taskbroker.retry_policy import MAX_DELAY, AttemptError, RetryPolicy


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
    DELAYED = "delayed"
    """Live, waiting in Redis until its ``not_before`` (a delay, or a retry's backoff); the
    timeout daemon then makes it pending and publishes it."""
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"
    TIMEOUT = "timeout"

    @property
    def is_final(self) -> bool:
        return self not in LIVE_STATES


LIVE_STATES = (TaskState.DELAYED, TaskState.PENDING, TaskState.RUNNING)
FINAL_STATES = (TaskState.COMPLETE, TaskState.FAILED, TaskState.ABORTED, TaskState.TIMEOUT)
RETRYABLE_STATES = (TaskState.FAILED, TaskState.TIMEOUT, TaskState.ABORTED)
"""The final states a task may be re-run from by hand (POST /task/{id}/retry)."""


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Every date-time the API accepts lies in [EARLIEST, LATEST]: a Unix timestamp of one is never
negative, and a millennium is left before Python's year 9999, so adding any duration the API
allows (at most a century: triggers.MAX_INTERVAL, Settings) cannot overflow."""
DATETIME_RANGE = "between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"


def in_range_utc(value: datetime) -> datetime:
    """``value`` (aware) in UTC; ValueError, saying the range, when outside [EARLIEST, LATEST]
    (a value near year 1 or 9999 with an offset cannot even be converted to UTC)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be {DATETIME_RANGE}")
    return utc


def _require_aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone, e.g. 2026-01-01T12:00:00Z")
    return in_range_utc(value)


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware_utc)]
"""A request's date-time: with a timezone, within the API's range, converted to UTC."""
SchedulerName = Annotated[str, Field(pattern=SCHEDULER_NAME_PATTERN, examples=["default"])]
AttemptTimeout = Annotated[float, Field(gt=0, le=MAX_DELAY, allow_inf_nan=False)]
"""Seconds one attempt may run before its consumer cancels it (the attempt then fails)."""


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
    """Where its final state is POSTed (docs/api.md, "Webhooks")."""
    not_before: datetime | None = None
    """When a delayed task becomes due (its delay, or a retry's backoff); None if never delayed."""
    retry: RetryPolicy | None = None
    """The retry policy in effect (the task's own, else its scheduler's); None: no retry."""
    attempt_timeout: float | None = None
    """Seconds one attempt may run (the task's own, else its scheduler's); None: no limit."""
    errors: list[AttemptError] = Field(default_factory=list)
    """The errors of its latest failed attempts (the last 10), oldest first."""


class QueueType(enum.StrEnum):
    """The RabbitMQ queue type of a scheduler (docs/operations.md, "RabbitMQ cluster and quorum
    queues")."""

    CLASSIC = "classic"
    """On one node, with priorities 0..9: unavailable while that node is down."""
    QUORUM = "quorum"
    """Replicated on a majority of nodes (Raft): survives the loss of a minority; no priorities
    (RabbitMQ 3.x), so its tasks must be scheduled at priority 0."""


class SchedulerDefinition(BaseModel):
    """What `POST /scheduler` registers: a named queue and the runtime its consumers use."""

    model_config = ConfigDict(extra="forbid")

    name: SchedulerName
    runtime: Annotated[str, Field(pattern=RUNTIME_NAME_PATTERN, examples=["inline"])] = "inline"
    description: Annotated[UnicodeText, Field(max_length=1000)] = ""
    queue_type: QueueType = Field(
        default=QueueType.CLASSIC,
        description="The RabbitMQ queue type; when a request leaves it out, TASKBROKER_QUEUE_TYPE. "
        "A definition stored before queue types existed is classic.",
    )
    retry: RetryPolicy | None = Field(
        default=None, description="The retry policy of its tasks that give none (default: no retry)."
    )
    attempt_timeout: AttemptTimeout | None = Field(
        default=None, description="Seconds an attempt of its tasks that give none may run."
    )

    def defaults(self) -> str:
        """Its task defaults as the create script reads them: ``"<retry>;<attempt_timeout>"``
        (either part may be empty), or "" when it has none."""
        if self.retry is None and self.attempt_timeout is None:
            return ""
        retry = self.retry.compact() if self.retry is not None else ""
        timeout = repr(self.attempt_timeout) if self.attempt_timeout is not None else ""
        return f"{retry};{timeout}"


class SchedulerStatus(SchedulerDefinition):
    """A scheduler with the live figures an operator scales by."""

    messages: int | None = Field(
        description="Messages waiting in the queue; null when RabbitMQ is unreachable."
    )
    consumers: int | None = Field(
        description="Consumers attached to the queue; null when RabbitMQ is unreachable."
    )
    live_tasks: int
    paused: bool = Field(
        default=False,
        description="Paused (`POST /scheduler/{name}/pause`): its consumers take no new tasks; "
        "scheduling still accepts them and they wait in the queue.",
    )


class ConsumerStatus(BaseModel):
    """One live consumer, as its last heartbeat described it (`GET /consumers`)."""

    id: str = Field(description="The consumer's id: host, process id and a random suffix.")
    scheduler: str
    runtime: str
    host: str
    pid: int
    version: str = Field(description="The taskbroker version the consumer runs.")
    concurrency: int
    running: list[UUID] = Field(description="The tasks it ran at its last heartbeat.")
    started_at: datetime
    last_heartbeat: datetime
    paused: bool = Field(
        description="It had stopped taking new tasks at its last heartbeat (its scheduler is paused)."
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
