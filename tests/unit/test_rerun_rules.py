"""Pure rules of re-running, no servers: the failed-task retention setting and the bulk filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from taskbroker.api.schemas import AbortSelection, RetryRequest, RetrySelection
from taskbroker.settings import Settings


def test_failed_tasks_are_kept_a_week_by_default_and_longer_than_the_others() -> None:
    settings = Settings()
    assert settings.failed_retention == timedelta(days=7)
    assert settings.failed_retention > settings.retention


@pytest.mark.parametrize(("text", "expected"), [("600", timedelta(seconds=600)), ("P1D", timedelta(days=1))])
def test_the_failed_retention_reads_seconds_or_an_iso_duration(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta
) -> None:
    monkeypatch.setenv("TASKBROKER_FAILED_RETENTION", text)
    assert Settings().failed_retention == expected


@pytest.mark.parametrize("text", ["0", "-5", "P36501D"])
def test_a_failed_retention_that_is_not_positive_or_beyond_a_century_is_refused(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("TASKBROKER_FAILED_RETENTION", text)
    with pytest.raises(ValidationError):
        Settings()


def test_a_bulk_filter_defaults_to_a_thousand_tasks_of_any_age() -> None:
    selection = AbortSelection()
    assert (selection.limit, selection.older_than, selection.scheduler, selection.state) == (
        1000,
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"delay": 5, "not_before": "2099-01-01T00:00:00Z"},
        {"older_than": "60"},
        {"limit": 10_001},
        {"state": "running"},
    ],
)
def test_a_bulk_retry_filter_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetrySelection.model_validate(body)


def test_a_retry_takes_a_delay_or_a_not_before_not_both() -> None:
    assert RetryRequest.model_validate({"delay": 1.5}).delay == 1.5
    with pytest.raises(ValidationError, match="not both"):
        RetryRequest.model_validate({"delay": 1, "not_before": "2099-01-01T00:00:00Z"})
