"""When a recurring schedule fires: APScheduler 3's trigger classes behind a validating front.

The vocabulary is APScheduler's (CronTrigger / IntervalTrigger / DateTrigger keyword arguments)
because users of the designs we come from already write it. We only borrow its fire-time
arithmetic; firing, storage and coordination between replicas are ours. Every argument is checked
here, one at a time, so a bad one is an ``InvalidTrigger`` naming it (a 422), never a 500.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from taskbroker.errors import InvalidTrigger
from taskbroker.models import DATETIME_RANGE, LATEST, in_range_utc

TriggerKind = Literal["cron", "interval", "date"]

CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
INTERVAL_FIELDS = ("weeks", "days", "hours", "minutes", "seconds")
DATE_FIELDS = ("start_date", "end_date")
ALLOWED: dict[str, tuple[str, ...]] = {
    "cron": (*CRON_FIELDS, *DATE_FIELDS),
    "interval": (*INTERVAL_FIELDS, *DATE_FIELDS),
    "date": ("run_date",),
}
MAX_INTERVAL = timedelta(days=366 * 100)
"""The longest interval: with taskbroker.models.LATEST, fire-time arithmetic never overflows."""

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_STEP = re.compile(r"^(\*|\d+|\d+-\d+)(?:/(\d+))?$")


@dataclass(frozen=True)
class TriggerSpec:
    """What a schedule says about time: the trigger, its keyword arguments or a crontab line, a zone.

    ``anchor`` is when an interval without ``start_date`` starts counting (the schedule's
    creation or its last trigger change), so every firing process computes the same fire times.
    """

    kind: TriggerKind
    kwargs: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    anchor: datetime | None = None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTrigger(
            "timezone", f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Amsterdam'"
        ) from None


def build_trigger(spec: TriggerSpec) -> BaseTrigger:
    """The APScheduler trigger for ``spec``; InvalidTrigger names the first bad argument."""
    tz = zone(spec.timezone)
    if spec.cron is not None:
        if spec.kind != "cron":
            raise InvalidTrigger("cron", "a crontab line needs trigger 'cron'")
        if spec.kwargs:
            raise InvalidTrigger("trigger_kwargs", "give either a crontab line or trigger_kwargs, not both")
        return _from_crontab(spec.cron, tz)
    allowed = ALLOWED[spec.kind]
    for name in spec.kwargs:
        if name not in allowed:
            raise InvalidTrigger(
                f"trigger_kwargs.{name}",
                f"{spec.kind} triggers take no argument {name!r}; they take {', '.join(allowed)}",
            )
    kwargs = {name: _argument(spec.kind, name, value, tz) for name, value in spec.kwargs.items()}
    if spec.kind == "cron":
        for name, value in kwargs.items():
            _check(lambda n=name, v=value: CronTrigger(timezone=tz, **{n: v}), f"trigger_kwargs.{name}")
        return _check(lambda: CronTrigger(timezone=tz, **kwargs), "trigger_kwargs")
    if spec.kind == "interval":
        length = timedelta(**{k: v for k, v in kwargs.items() if k in INTERVAL_FIELDS})
        if length <= timedelta(0):
            raise InvalidTrigger("trigger_kwargs", "an interval needs a positive length, e.g. {'hours': 12}")
        if "start_date" not in kwargs:
            kwargs["start_date"] = (spec.anchor or datetime.now(UTC)) + length
        return _check(lambda: IntervalTrigger(timezone=tz, **kwargs), "trigger_kwargs")
    if "run_date" not in kwargs:
        raise InvalidTrigger("trigger_kwargs.run_date", "a date trigger needs run_date (ISO-8601)")
    return _check(lambda: DateTrigger(timezone=tz, **kwargs), "trigger_kwargs.run_date")


def first_fire_time(spec: TriggerSpec, now: datetime) -> datetime | None:
    """The first fire time at or after ``now``; None when the trigger never fires again."""
    trigger = build_trigger(spec)
    fire: datetime | None = _check(lambda: trigger.get_next_fire_time(None, now), "trigger_kwargs")
    if fire is None or fire < now:  # a date trigger whose run_date has passed
        return None
    return fire.astimezone(UTC)


def following_fire_time(spec: TriggerSpec, fired: datetime, now: datetime) -> datetime | None:
    """The next fire time after the one just fired, skipping any already past at ``now``.

    This is the coalescing rule: however many fire times a stopped firer missed, the run it makes
    now stands for all of them, and the schedule continues from the next future fire time.
    """
    trigger = build_trigger(spec)
    try:
        following: datetime | None = trigger.get_next_fire_time(fired, now)
        if following is not None and following <= now:
            following = trigger.get_next_fire_time(None, now)
            if following is not None and following <= fired:
                return None
    except OverflowError:  # a cron year near 9999: past the range, so never
        return None
    if following is None or following > LATEST:
        return None
    return following.astimezone(UTC)


def validate(spec: TriggerSpec, now: datetime) -> datetime | None:
    """Check ``spec`` and return its first fire time; a date in the past is refused."""
    fire = first_fire_time(spec, now)
    if fire is None and spec.kind == "date":
        raise InvalidTrigger("trigger_kwargs.run_date", "run_date is in the past: give a future time")
    if fire is None:
        raise InvalidTrigger("trigger_kwargs", "this trigger never fires (check end_date and the fields)")
    if fire > LATEST:
        raise InvalidTrigger("trigger_kwargs", f"the first fire time must be {DATETIME_RANGE}")
    return fire


def describe(spec: TriggerSpec) -> str:
    """A one-line summary for tables: ``cron 0 12 * * 1``, ``interval hours=12``."""
    if spec.cron is not None:
        return f"cron {spec.cron}"
    arguments = " ".join(f"{k}={v}" for k, v in spec.kwargs.items())
    suffix = "" if spec.timezone == "UTC" else f" ({spec.timezone})"
    return f"{spec.kind} {arguments}{suffix}".strip()


def _check(build: Any, argument: str) -> Any:
    try:
        return build()
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise InvalidTrigger(argument, str(exc) or type(exc).__name__) from None


def _argument(kind: str, name: str, value: Any, tz: ZoneInfo) -> Any:
    where = f"trigger_kwargs.{name}"
    if name in ("start_date", "end_date", "run_date"):
        return _datetime(value, tz, where)
    if kind == "interval":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidTrigger(where, f"{name} must be a number, e.g. 12")
        if value < 0:
            raise InvalidTrigger(where, f"{name} must not be negative")
        try:
            if timedelta(**{name: value}) > MAX_INTERVAL:
                raise OverflowError
        except OverflowError:
            raise InvalidTrigger(where, f"{name} is too large (at most 100 years)") from None
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidTrigger(where, f"{name} must be a number or a cron expression string such as '*/5'")
    if isinstance(value, str) and len(value) > 200:
        raise InvalidTrigger(where, f"{name} is too long")
    return value


def _datetime(value: Any, tz: ZoneInfo, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidTrigger(where, "must be an ISO-8601 date-time string, e.g. 2026-12-01T09:00:00+01:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidTrigger(where, f"{value!r} is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)  # a time without a zone is in the schedule's timezone
    try:
        in_range_utc(parsed)
    except ValueError as exc:
        raise InvalidTrigger(where, f"{where.rpartition('.')[2]} {exc}") from None
    return parsed


def _from_crontab(line: str, tz: ZoneInfo) -> CronTrigger:
    fields = line.split()
    if len(fields) != 5:
        raise InvalidTrigger("cron", "a crontab line has five fields: minute hour day month day-of-week")
    minute, hour, day, month, day_of_week = fields
    names = ("minute", "hour", "day", "month", "day_of_week")
    values = (minute, hour, day, month, _standard_day_of_week(day_of_week))
    for name, value in zip(names, values, strict=True):
        _check(lambda n=name, v=value: CronTrigger(timezone=tz, **{n: v}), "cron")
    trigger: CronTrigger = _check(
        lambda: CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=values[4], timezone=tz
        ),
        "cron",
    )
    return trigger


def _standard_day_of_week(field_text: str) -> str:
    """Crontab counts days from Sunday (0 or 7); APScheduler from Monday (0). Numbers are turned
    into day names, which both read the same way, so ``0 12 * * 1`` fires on Mondays."""
    parts: list[str] = []
    for part in field_text.lower().split(","):
        match = _CRON_STEP.match(part)
        if match is None:
            parts.append(part)  # names such as mon-fri: APScheduler reads them as crontab does
            continue
        base, step = match.group(1), int(match.group(2) or 1)
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            first, last = (int(x) for x in base.split("-"))
        else:
            first = last = int(base)
            if match.group(2):
                last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise InvalidTrigger("cron", f"day-of-week {part!r} is not within 0-7")
        parts.extend(_DAY_NAMES[day % 7] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(parts))
