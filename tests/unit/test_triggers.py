"""Fire-time arithmetic and trigger validation: what users write, what fires, what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskbroker.errors import InvalidTrigger
from taskbroker.triggers import TriggerSpec, describe, first_fire_time, following_fire_time, validate

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # a Wednesday


def test_crontab_day_of_week_counts_from_sunday_as_crontab_does() -> None:
    monday_noon = validate(TriggerSpec("cron", cron="0 12 * * 1"), NOW)
    assert monday_noon == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert monday_noon.weekday() == 0
    sunday = validate(TriggerSpec("cron", cron="0 12 * * 0"), NOW)
    assert sunday is not None
    assert sunday.weekday() == 6
    assert validate(TriggerSpec("cron", cron="0 12 * * 7"), NOW) == sunday


def test_crontab_weekday_ranges_and_steps_use_crontab_numbering() -> None:
    weekdays = validate(TriggerSpec("cron", cron="0 12 * * 1-5"), NOW)
    assert weekdays == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    every_other = validate(TriggerSpec("cron", cron="0 12 * * */2"), NOW)  # sun, tue, thu, sat
    assert every_other == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_cron_keyword_arguments_fire_in_the_schedules_timezone() -> None:
    spec = TriggerSpec("cron", {"hour": 1, "minute": 30}, timezone="Europe/Amsterdam")
    assert validate(spec, NOW) == datetime(2026, 11, 26, 0, 30, tzinfo=UTC)


def test_interval_counts_from_its_anchor_without_a_start_date() -> None:
    spec = TriggerSpec("interval", {"hours": 12}, anchor=NOW)
    assert validate(spec, NOW) == NOW + timedelta(hours=12)


def test_date_trigger_fires_once_then_never_again() -> None:
    run = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    spec = TriggerSpec("date", {"run_date": run.isoformat()})
    assert validate(spec, NOW) == run
    assert following_fire_time(spec, run, run) is None
    assert first_fire_time(spec, run + timedelta(seconds=1)) is None


def test_missed_fire_times_coalesce_into_the_next_future_one() -> None:
    spec = TriggerSpec("interval", {"hours": 1}, anchor=NOW - timedelta(hours=1))
    late = NOW + timedelta(hours=5, minutes=30)
    assert following_fire_time(spec, NOW, late) == NOW + timedelta(hours=6)


def test_describe_reads_like_the_definition() -> None:
    assert describe(TriggerSpec("cron", cron="0 12 * * 1")) == "cron 0 12 * * 1"
    assert describe(TriggerSpec("interval", {"hours": 12})) == "interval hours=12"


@pytest.mark.parametrize(
    ("spec", "argument"),
    [
        (TriggerSpec("cron", {"hour": 25}), "trigger_kwargs.hour"),
        (TriggerSpec("cron", {"minute": "x"}), "trigger_kwargs.minute"),
        (TriggerSpec("cron", {"minute": [1]}), "trigger_kwargs.minute"),
        (TriggerSpec("cron", {"year": 10**30}), "trigger_kwargs.year"),
        (TriggerSpec("cron", {"hours": 1}), "trigger_kwargs.hours"),
        (TriggerSpec("cron", {"start_date": "not a date"}), "trigger_kwargs.start_date"),
        (TriggerSpec("cron", {"month": 2, "day": 31}), "trigger_kwargs"),
        (TriggerSpec("interval", {"hours": "x"}), "trigger_kwargs.hours"),
        (TriggerSpec("interval", {"hours": -1}), "trigger_kwargs.hours"),
        (TriggerSpec("interval", {"hours": 10**30}), "trigger_kwargs.hours"),
        (TriggerSpec("interval", {"hours": float("inf")}), "trigger_kwargs.hours"),
        (TriggerSpec("interval", {"seconds": 0}), "trigger_kwargs"),
        (TriggerSpec("interval", {}), "trigger_kwargs"),
        (TriggerSpec("date", {}), "trigger_kwargs.run_date"),
        (TriggerSpec("date", {"run_date": 5}), "trigger_kwargs.run_date"),
        (TriggerSpec("date", {"run_date": "2020-01-01T00:00:00Z"}), "trigger_kwargs.run_date"),
        (TriggerSpec("cron", timezone="Mars/Olympus_Mons"), "timezone"),
        (TriggerSpec("cron", timezone="../../etc/passwd"), "timezone"),
        (TriggerSpec("cron", cron="61 * * * *"), "cron"),
        (TriggerSpec("cron", cron="* * *"), "cron"),
        (TriggerSpec("cron", cron="0 12 * * 9"), "cron"),
        (TriggerSpec("interval", cron="0 12 * * 1"), "cron"),
        (TriggerSpec("cron", {"hour": 1}, cron="0 12 * * 1"), "trigger_kwargs"),
    ],
)
def test_bad_trigger_arguments_are_named(spec: TriggerSpec, argument: str) -> None:
    with pytest.raises(InvalidTrigger) as raised:
        validate(spec, NOW)
    assert raised.value.argument == argument


def test_naive_dates_are_in_the_schedules_timezone() -> None:
    kwargs: dict[str, Any] = {"run_date": "2026-12-01T10:00:00"}
    fire = validate(TriggerSpec("date", kwargs, timezone="Europe/Amsterdam"), NOW)
    assert fire == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
