"""Request and response bodies of the HTTP API (storage models live in taskbroker.models)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

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
