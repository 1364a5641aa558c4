"""Request and response bodies of the HTTP API (storage models live in taskbroker.models)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskbroker.models import AttemptTimeout, AwareDatetime, SchedulerName, Task, UnicodeText, utcnow
from taskbroker.queue.base import MAX_PRIORITY
from taskbroker.retry_policy import MAX_DELAY, RetryPolicy
from taskbroker.token_models import Role, TokenRecord
from taskbroker.tokens import check_scope

MAX_BATCH = 1000
MAX_KEY_LENGTH = 255
MAX_CALLBACK_URL = 2048
IdempotencyKey = Annotated[UnicodeText, Field(min_length=1, max_length=MAX_KEY_LENGTH)]


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "scheduler": "default",
                    "attributes": {
                        "function": "taskbroker.runtimes.builtin:echo",
                        "kwargs": {"hello": "world"},
                    },
                }
            ]
        },
    )

    scheduler: SchedulerName
    attributes: dict[str, Any] = Field(default_factory=dict)
    timeout: AwareDatetime | None = Field(
        default=None,
        description="When the task expires if not done (ISO-8601 with a timezone). Default: in 6 hours.",
    )

    priority: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=MAX_PRIORITY,
        description="0 (lowest, the default) to 9 (highest): of a scheduler's waiting tasks, "
        "higher priorities are delivered first.",
    )
    key: IdempotencyKey | None = Field(
        default=None,
        description="Idempotency key: while a task of this scheduler scheduled with the same key by "
        "the same token is live, that task is answered (200) instead of a new one. Same as the "
        "Idempotency-Key header.",
    )
    callback_url: Annotated[UnicodeText, Field(min_length=1, max_length=MAX_CALLBACK_URL)] | None = Field(
        default=None,
        description="http(s) URL whose host and port TASKBROKER_WEBHOOK_HOSTS admits: the final task "
        "is POSTed there, signed (docs/api.md, Webhooks).",
    )

    not_before: AwareDatetime | None = Field(
        default=None,
        description="Run no earlier than this (ISO-8601 with a timezone): the task waits `delayed` "
        "until then. Before `timeout`; not with `delay`.",
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY,
        allow_inf_nan=False,
        description="Run no earlier than this many seconds from now (as `not_before`).",
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="How failed attempts are retried (docs/retries.md). Default: the scheduler's "
        "policy, else no retry.",
    )
    attempt_timeout: AttemptTimeout | None = Field(
        default=None,
        description="Seconds one attempt may run; past it the attempt is cancelled and counts as "
        "failed (and retryable). Default: the scheduler's, else no limit.",
    )

    @field_validator("timeout")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError("timeout is in the past: give a time after now")
        return value

    @model_validator(mode="after")
    def _one_start_time(self) -> ScheduleRequest:
        if self.not_before is not None and self.delay is not None:
            raise ValueError("give not_before or delay, not both")
        if self.not_before is not None and self.timeout is not None and self.not_before >= self.timeout:
            raise ValueError("not_before must be before the task's timeout")
        return self

    def start_after(self, now: datetime) -> datetime | None:
        """When the task may first run, if it is delayed (``delay`` counts from ``now``)."""
        if self.delay is not None:
            return now + timedelta(seconds=self.delay)
        return self.not_before


class BatchScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[ScheduleRequest] = Field(min_length=1, max_length=MAX_BATCH)


class TaskList(BaseModel):
    tasks: list[Task]


class TaskPageResponse(BaseModel):
    tasks: list[Task]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null when the listing is complete."
    )


class ErrorBody(BaseModel):
    detail: Any


class ReadyStatus(BaseModel):
    redis: str
    rabbitmq: str


BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be read as JSON text (UTF-8)"},
    413: {"model": ErrorBody, "description": "Request body over the size limit"},
    415: {"model": ErrorBody, "description": "The body is not sent as application/json (or a +json type)"},
}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown, revoked or expired token"},
    403: {"model": ErrorBody, "description": "The token's role or scheduler list does not allow this"},
}


class TokenRequest(BaseModel):
    """What `POST /token` takes."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    name: UnicodeText = Field(default="", max_length=200)
    schedulers: list[SchedulerName] | None = Field(
        default=None,
        max_length=1000,
        description="Limit the token to these schedulers; null: all. Not for admin tokens (422).",
    )
    expires_at: AwareDatetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _expires_in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError("expires_at is in the past")
        return value

    @model_validator(mode="after")
    def _admins_are_not_limited(self) -> TokenRequest:
        check_scope(self.role, self.schedulers)  # AdminScopeRefused is a ValueError: a 422
        return self


class CreatedToken(TokenRecord):
    token: str = Field(description="The token itself. Shown this once only: store it now.")


MAX_BULK = 10_000
MAX_SECONDS = 100 * 365 * 24 * 3600
"""A century: the longest duration the API takes (taskbroker.models.LATEST leaves room for it)."""
Seconds = Annotated[float, Field(strict=True, ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


class RetryOptions(BaseModel):
    """How a task is re-run: at once (pending), or delayed by ``delay`` or until ``not_before``."""

    timeout: AwareDatetime | None = Field(
        default=None,
        description="The re-run task's new expiry (ISO-8601 with a timezone). Default: "
        "TASKBROKER_DEFAULT_TIMEOUT from now.",
    )
    delay: Seconds | None = Field(
        default=None, description="Seconds to wait before the task is published again (state delayed)."
    )
    not_before: AwareDatetime | None = Field(
        default=None, description="Publish the task again at this time, not before (state delayed)."
    )

    @field_validator("timeout")
    @classmethod
    def _timeout_in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError("timeout is in the past: give a time after now")
        return value

    @model_validator(mode="after")
    def _one_way_to_wait(self) -> RetryOptions:
        if self.delay is not None and self.not_before is not None:
            raise ValueError("give delay or not_before, not both")
        return self


class RetryRequest(RetryOptions):
    """What `POST /task/{id}/retry` takes (the body is optional)."""

    model_config = ConfigDict(extra="forbid")


class TaskSelection(BaseModel):
    """Which tasks a bulk change touches; a client's own only, whatever it asks."""

    scheduler: SchedulerName | None = Field(
        default=None, description="Only this scheduler's tasks. Default: every scheduler the token may use."
    )
    older_than: Seconds = Field(
        default=0,
        description="Only tasks at least this many seconds old: since they were created (abort) or "
        "finished (retry).",
    )
    limit: int = Field(default=1000, strict=True, ge=1, le=MAX_BULK, description="Most tasks changed.")


class AbortSelection(TaskSelection):
    """What `POST /tasks/abort` takes."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["pending", "running", "delayed"] | None = Field(
        default=None, description="Only live tasks in this state. Default: every live state."
    )


class RetrySelection(TaskSelection, RetryOptions):
    """What `POST /tasks/retry` takes."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["failed", "timeout", "aborted"] | None = Field(
        default=None, description="Only retained tasks that ended so. Default: failed, timeout and aborted."
    )


class BulkChange(BaseModel):
    """What a bulk change did."""

    changed: int = Field(description="How many tasks were changed.")
    ids: list[UUID] = Field(description="Their ids.")
    published: bool = Field(
        default=True,
        description="Of a retry: every re-run pending task's message was confirmed by RabbitMQ. If "
        "false, they are published again by reconciliation (TASKBROKER_REPUBLISH_AFTER).",
    )


class Caller(BaseModel):
    """What `GET /whoami` answers: who the token is, so a user interface can show what its role
    may use (the API still checks every call)."""

    token_id: str
    role: Role
    schedulers: list[str] | None = Field(description="The schedulers it may use; null: all.")


class SchedulerOverview(BaseModel):
    """One scheduler's figures on the overview. ``consumers`` is null when RabbitMQ did not answer."""

    name: str
    runtime: str
    waiting: int = Field(description="Live tasks no consumer runs yet (pending).")
    delayed: int = Field(
        description="Tasks waiting in Redis for their not_before (a delay or a retry's backoff)."
    )
    running: int = Field(description="Tasks held under a consumer's lease.")
    consumers: int | None = Field(description="Consumers attached to its queue (RabbitMQ).")
    paused: bool = Field(description="Its consumers take no new tasks (POST /scheduler/{name}/pause).")
    completed_5m: int
    failed_5m: int
    completed_60m: int
    failed_60m: int
    throughput: list[int] = Field(
        description="Tasks finished (any final state) in each of the last 15 minutes, oldest first."
    )


class Overview(BaseModel):
    schedulers: list[SchedulerOverview]
    generated_at: datetime
