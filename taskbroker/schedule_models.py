"""Recurring schedules as they cross boundaries: the HTTP bodies, a `schedules load` file entry,
the stored record and what the API answers. Trigger checks live in taskbroker.triggers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskbroker.models import AttemptTimeout, SchedulerName, UnicodeText
from taskbroker.retry_policy import RetryPolicy
from taskbroker.triggers import TriggerKind, TriggerSpec

ScheduleName = Annotated[UnicodeText, Field(min_length=1, max_length=200, examples=["nightly-report"])]
CronLine = Annotated[str, Field(max_length=200, examples=["0 12 * * 1"])]
TimezoneName = Annotated[str, Field(min_length=1, max_length=64, examples=["UTC", "Europe/Amsterdam"])]
StrictBool = Annotated[bool, Field(strict=True)]
"""true or false only: not "true", 1 or "yes" (a typo must not flip a schedule)."""
TRIGGER_FIELDS = frozenset({"trigger", "trigger_kwargs", "cron", "timezone"})


def _positive(value: timedelta | None) -> timedelta | None:
    if value is not None and value <= timedelta(0):
        raise ValueError("timeout_after must be a positive duration, e.g. PT1H or 3600")
    return value


class ScheduleSpec(BaseModel):
    """What `POST /schedules` takes, and one entry of a `schedules load` file."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly-report",
                    "scheduler": "default",
                    "attributes": {
                        "function": "taskbroker.runtimes.builtin:echo",
                        "kwargs": {"report": "nightly"},
                    },
                    "trigger": "cron",
                    "trigger_kwargs": {"hour": 1, "minute": 30},
                    "timezone": "Europe/Amsterdam",
                }
            ]
        },
    )

    name: ScheduleName
    scheduler: SchedulerName
    attributes: dict[str, Any] = Field(default_factory=dict)
    trigger: TriggerKind | None = Field(
        default=None, description="cron, interval or date; may be left out when `cron` is given."
    )
    trigger_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="APScheduler 3 keyword arguments of the trigger, e.g. {'hours': 12} or {'hour': 1}.",
    )
    cron: CronLine | None = Field(default=None, description="A crontab line instead of trigger_kwargs.")
    timezone: TimezoneName = "UTC"
    timeout_after: timedelta | None = Field(
        default=None,
        description="Each created task's timeout, counted from its fire time "
        "(default: TASKBROKER_DEFAULT_TIMEOUT).",
    )
    enabled: StrictBool = True
    no_overlap: StrictBool = Field(
        default=False, description="Skip a fire time while the previous run of this schedule is still live."
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Each created task's retry policy (default: its scheduler's)."
    )
    attempt_timeout: AttemptTimeout | None = Field(
        default=None, description="Each created task's attempt_timeout in seconds (default: its scheduler's)."
    )

    @field_validator("timeout_after")
    @classmethod
    def _timeout_positive(cls, value: timedelta | None) -> timedelta | None:
        return _positive(value)

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleSpec:
        if self.cron is not None:
            if self.trigger not in (None, "cron"):
                raise ValueError("a crontab line (`cron`) goes with trigger 'cron' only")
            self.trigger = "cron"
        elif self.trigger is None:
            raise ValueError("give a trigger (cron, interval or date) with trigger_kwargs, or a `cron` line")
        return self

    def trigger_spec(self, anchor: datetime | None) -> TriggerSpec:
        assert self.trigger is not None
        return TriggerSpec(self.trigger, dict(self.trigger_kwargs), self.cron, self.timezone, anchor)


class SchedulePatch(BaseModel):
    """What `PATCH /schedules/{id}` takes: only the fields given change. A new trigger replaces the
    old one whole (trigger, trigger_kwargs, cron) and the next run is computed again from now."""

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName | None = None
    scheduler: SchedulerName | None = None
    attributes: dict[str, Any] | None = None
    trigger: TriggerKind | None = None
    trigger_kwargs: dict[str, Any] | None = None
    cron: CronLine | None = None
    timezone: TimezoneName | None = None
    timeout_after: timedelta | None = None
    enabled: StrictBool | None = None
    no_overlap: StrictBool | None = None
    retry: RetryPolicy | None = None
    attempt_timeout: AttemptTimeout | None = None

    @field_validator("timeout_after")
    @classmethod
    def _timeout_positive(cls, value: timedelta | None) -> timedelta | None:
        return _positive(value)

    def apply(self, current: ScheduleSpec) -> ScheduleSpec:
        """The spec after this patch (raises pydantic's ValidationError if the result is invalid)."""
        given = self.model_dump(exclude_unset=True)
        merged = current.model_dump()
        if given.keys() & {"trigger", "trigger_kwargs", "cron"}:
            merged.update(trigger=None, trigger_kwargs={}, cron=None)
        for key, value in given.items():
            if value is None and key not in ("cron", "timeout_after", "retry", "attempt_timeout"):
                continue
            merged[key] = value
        return ScheduleSpec.model_validate(merged)


class ScheduleRecord(BaseModel):
    """A stored schedule: its spec plus what the firing processes keep up to date."""

    id: UUID
    spec: ScheduleSpec
    owner: str
    created_at: datetime
    updated_at: datetime
    anchor: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: UUID | None
    runs: int
    version: str
    last_error: str | None


class Schedule(ScheduleSpec):
    """A schedule as the API shows it."""

    id: UUID
    owner: str = Field(description="The token id that created it; its tasks are owned by that token.")
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(description="null when paused or when it will not fire again.")
    last_run_at: datetime | None
    last_task_id: UUID | None
    last_state: str | None = Field(
        description="State of the last created task; `expired` once it is past the retention time."
    )
    runs: int = Field(description="Runs created since the schedule was made (forced runs included).")
    last_error: str | None = None


RunState = Literal[
    "delayed", "pending", "running", "complete", "failed", "aborted", "timeout", "creating", "expired"
]


class ScheduleRun(BaseModel):
    """One task a schedule created."""

    task_id: UUID
    scheduled_for: datetime | None = Field(description="The fire time it stands for; null when forced.")
    fired_at: datetime
    forced: bool = False
    state: RunState = Field(
        description="The task's state; `creating` while its creation is retried, `expired` once the "
        "task is past the retention time."
    )
