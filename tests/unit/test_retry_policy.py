"""The retry policy's backoff, its compact form in Redis, and how the client sends it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from taskbroker.client import RetryPolicy, TaskSpec
from taskbroker.client.calls import schedule as schedule_call


def test_backoff_grows_by_the_factor_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1.5, backoff_factor=3, max_delay=20)

    assert [policy.delay(n) for n in range(1, 6)] == [1.5, 4.5, 13.5, 20, 20]


def test_backoff_of_a_huge_attempt_number_is_the_cap_without_overflow() -> None:
    policy = RetryPolicy(max_attempts=1000, initial_delay=1, backoff_factor=100, max_delay=3600)

    assert policy.delay(999) == 3600


def test_full_jitter_draws_between_zero_and_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=2, backoff_factor=2, max_delay=100, jitter=True)
    draw = random.Random(3)

    delays = [policy.delay(3, draw=draw) for _ in range(200)]

    assert all(0 <= d <= 8 for d in delays)
    assert len(set(delays)) > 100  # drawn, not a constant


def test_attempts_left_follow_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)

    assert [policy.retries_after(n) for n in (1, 2, 3)] == [True, True, False]


def test_compact_form_reads_back_as_the_same_policy() -> None:
    policy = RetryPolicy(max_attempts=7, initial_delay=0.25, backoff_factor=1.5, max_delay=30, jitter=True)

    assert RetryPolicy.from_compact(policy.compact()) == policy
    assert len(policy.compact()) < 40  # stays a short field of the task's hash


@pytest.mark.parametrize(
    "fields",
    [
        {"max_attempts": 0},
        {"backoff_factor": 0.9},
        {"initial_delay": -1},
        {"initial_delay": 5, "max_delay": 1},
    ],
)
def test_invalid_policy_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_client_sends_delay_retry_and_attempt_timeout() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=2)
    spec = TaskSpec("s", {}, delay=timedelta(seconds=90), retry=policy, attempt_timeout=12.5)

    body = schedule_call(spec).json

    assert body["delay"] == 90
    assert body["retry"] == {
        "max_attempts": 4,
        "initial_delay": 2,
        "backoff_factor": 2,
        "max_delay": 300,
        "jitter": False,
    }
    assert body["attempt_timeout"] == 12.5
    assert "not_before" not in body


def test_client_refuses_a_not_before_without_a_timezone() -> None:
    with pytest.raises(ValueError, match="timezone"):
        schedule_call(TaskSpec("s", {}, not_before=datetime(2030, 1, 1)))
    sent = schedule_call(TaskSpec("s", {}, not_before=datetime(2030, 1, 1, tzinfo=UTC))).json
    assert sent["not_before"] == "2030-01-01T00:00:00+00:00"


def test_a_long_initial_delay_without_a_max_delay_is_its_own_cap() -> None:
    assert RetryPolicy(initial_delay=600).max_delay == 600
    assert RetryPolicy(initial_delay=10).max_delay == 300
