"""Request values outside what can be stored or computed with, by field and path: the tables the
integration tests check answer by answer (tests/integration/test_security.py) and the hardening
pass throws at a real deployment (tests/hardening). Every body names the scheduler ``alpha``."""

from __future__ import annotations

from typing import Any

OVERFLOWING_TIMES = [
    "9999-12-31T23:59:59-14:00",  # past year 9999 once in UTC
    "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC
    "9999-12-31T23:59:59Z",  # representable, but no duration can be added to it
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",  # a negative Unix timestamp
]


def _schedule_body(trigger: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": "edge", "scheduler": "alpha", "trigger": trigger, "trigger_kwargs": kwargs}


DATETIME_FIELDS: list[tuple[str, str, Any, tuple[str | int, ...]]] = [
    ("POST", "/task/schedule", lambda t: {"scheduler": "alpha", "timeout": t}, ("body", "timeout")),
    (
        "POST",
        "/task/schedule/batch",
        lambda t: {"tasks": [{"scheduler": "alpha", "timeout": t}]},
        ("body", "tasks", 0, "timeout"),
    ),
    ("POST", "/token", lambda t: {"role": "client", "expires_at": t}, ("body", "expires_at")),
    (
        "POST",
        "/schedules",
        lambda t: _schedule_body("date", run_date=t),
        ("body", "trigger_kwargs", "run_date"),
    ),
    (
        "POST",
        "/schedules",
        lambda t: _schedule_body("interval", hours=1, start_date=t),
        ("body", "trigger_kwargs", "start_date"),
    ),
    (
        "POST",
        "/schedules",
        lambda t: _schedule_body("interval", hours=1, end_date=t),
        ("body", "trigger_kwargs", "end_date"),
    ),
    (
        "POST",
        "/schedules",
        lambda t: _schedule_body("cron", hour=1, start_date=t),
        ("body", "trigger_kwargs", "start_date"),
    ),
    (
        "POST",
        "/schedules",
        lambda t: _schedule_body("cron", hour=1, end_date=t),
        ("body", "trigger_kwargs", "end_date"),
    ),
    (
        "PATCH",
        "/schedules/{id}",
        lambda t: {"trigger": "date", "trigger_kwargs": {"run_date": t}},
        ("body", "trigger_kwargs", "run_date"),
    ),
]


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '[1, {"deep": NaN}]']
SCHEDULE = '"name": "n", "scheduler": "alpha"'
FREE_FORM_JSON = [
    ("POST", "/task/schedule", '{"scheduler": "alpha", "attributes": {"x": VALUE}}', ("body", "attributes")),
    (
        "POST",
        "/task/schedule/batch",
        '{"tasks": [{"scheduler": "alpha", "attributes": {"x": [VALUE]}}]}',
        ("body", "attributes"),
    ),
    (
        "POST",
        "/schedules",
        f'{{{SCHEDULE}, "cron": "0 1 * * *", "attributes": {{"x": VALUE}}}}',
        ("body", "attributes"),
    ),
    ("PATCH", "/schedules/{id}", '{"attributes": {"x": VALUE}}', ("body", "attributes")),
    (
        "POST",
        "/schedules",
        f'{{{SCHEDULE}, "trigger": "interval", "trigger_kwargs": {{"hours": VALUE}}}}',
        ("body", "trigger_kwargs", "hours"),
    ),
    (
        "POST",
        "/schedules",
        f'{{{SCHEDULE}, "trigger": "cron", "trigger_kwargs": {{"hour": VALUE}}}}',
        ("body", "trigger_kwargs", "hour"),
    ),
]
