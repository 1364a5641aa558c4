"""Retries with backoff, delayed tasks and attempt time limits, with an in-process consumer and
timeout daemon, on the real servers and on the embedded pair (docs/retries.md).

What a retry waited is read from the task's events (each ``delayed`` event records the
``not_before`` the consumer computed), never measured with sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from taskbroker.backends import Backends
from taskbroker.event_models import EventKind, TaskEvent
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.support import flaky
from tests.support.inprocess import TEST_ALLOW, Api, running_consumer
from tests.support.recorder import Recording

SCHEDULER = "retries"
ALLOW = (*TEST_ALLOW, flaky.MODULE)
NOOP = {"function": "taskbroker.runtimes.builtin:noop"}


@asynccontextmanager
async def running_daemon(settings: Settings, backends: Backends) -> AsyncIterator[TimeoutDaemon]:
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await running


async def _schedule(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.http.post("/task/schedule", json={"scheduler": SCHEDULER, **body})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def _events(backends: Backends, task_id: str) -> list[TaskEvent]:
    return (await backends.events.task_history(UUID(task_id))).events


def _delays(events: list[TaskEvent]) -> list[TaskEvent]:
    return [e for e in events if e.state is EventKind.DELAYED]


def _flaky(recording: Recording, function: str, tag: str, **kwargs: Any) -> dict[str, Any]:
    return flaky.call(function, tag, recording.redis_url, recording.prefix, **kwargs)


async def test_task_failing_twice_completes_on_its_third_attempt_after_the_policys_backoffs(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    policy = {"max_attempts": 3, "initial_delay": 0.5, "backoff_factor": 4, "max_delay": 10}
    task = await _schedule(
        api, {"attributes": _flaky(recording, "fail_times", "t", times=2), "retry": policy}
    )
    assert task["retry"] == {**policy, "jitter": False}

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert final["attempts"] == 3
    assert final["result"] == {"succeeded_on_run": 3}
    assert [(e["attempt"], e["error"]) for e in final["errors"]] == [
        (1, "RuntimeError: failure 1"),
        (2, "RuntimeError: failure 2"),
    ]
    events = await _events(backends, task["id"])
    delays = _delays(events)
    assert [(e.reason, e.attempt) for e in delays] == [("retry", 1), ("retry", 2)]
    for event, expected in zip(delays, (0.5, 2.0), strict=True):
        assert event.not_before is not None
        waited = (event.not_before - event.at).total_seconds()
        # not_before is computed just before the script that records the event runs.
        assert expected - 0.4 <= waited <= expected + 0.01, (expected, waited)
    runs = [e for e in events if e.state is EventKind.RUNNING]
    assert [r.attempt for r in runs] == [1, 2, 3]
    for delay, run in zip(delays, runs[1:], strict=True):
        assert delay.not_before is not None
        assert run.at >= delay.not_before


async def test_task_failing_on_every_attempt_ends_failed_with_each_error_kept(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    policy = {"max_attempts": 2, "initial_delay": 0.1}
    task = await _schedule(
        api, {"attributes": _flaky(recording, "fail_times", "t", times=5), "retry": policy}
    )

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert final["attempts"] == 2
    assert final["error"] == "RuntimeError: failure 2"
    assert [e["error"] for e in final["errors"]] == ["RuntimeError: failure 1", "RuntimeError: failure 2"]
    assert recording.prefix  # the runs' counter lives under the recorder's keys
    assert [e.reason for e in _delays(await _events(backends, task["id"]))] == ["retry"]


async def test_delayed_task_waits_delayed_then_runs_no_earlier_than_its_not_before(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, {"attributes": NOOP, "delay": 0.5})
    assert task["state"] == "delayed"
    stored = await api.task(task["id"])
    assert stored["state"] == "delayed"
    assert stored["not_before"] == task["not_before"]
    census = await backends.store.live_census()
    assert census.delayed_per_scheduler == {SCHEDULER: 1}
    assert census.pending == 0

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert datetime.fromisoformat(final["started_at"]) >= datetime.fromisoformat(task["not_before"])
    states = [e.state for e in await _events(backends, task["id"])]
    assert states == [EventKind.DELAYED, EventKind.PENDING, EventKind.RUNNING, EventKind.COMPLETE]
    assert (await backends.store.live_census()).delayed_per_scheduler == {SCHEDULER: 0}


async def test_task_with_not_before_runs_no_earlier(api: Api, settings: Settings, backends: Backends) -> None:
    await api.register(SCHEDULER)
    not_before = datetime.now(UTC) + timedelta(seconds=0.5)
    task = await _schedule(api, {"attributes": NOOP, "not_before": not_before.isoformat()})
    assert datetime.fromisoformat(task["not_before"]) == not_before

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert datetime.fromisoformat(final["started_at"]) >= not_before


async def test_delayed_task_aborted_never_runs(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, {"attributes": recording.call("victim"), "delay": 0.3})
    aborted = await api.http.post(f"/task/{task['id']}/abort")
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "aborted"
    assert await backends.store.delayed_count() == 0

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        # Due after the victim would have been: once it has run, the victim had its chance.
        sentinel = await _schedule(api, {"attributes": recording.call("sentinel"), "delay": 0.6})
        assert (await api.wait_for_state(sentinel["id"]))["state"] == "complete"

    assert recording.starts("victim") == 0
    assert (await api.task(task["id"]))["state"] == "aborted"


async def test_delayed_task_past_its_timeout_ends_timeout(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, {"attributes": NOOP, "delay": 600})

    expired = await backends.store.expire_due(limit=10, now=time.time() + 7 * 3600)

    assert [(e.id, e.previous_state.value) for e in expired] == [(task["id"], "delayed")]
    assert (await api.task(task["id"]))["state"] == "timeout"
    assert await backends.store.delayed_count() == 0
    census = await backends.store.live_census()
    assert census.per_scheduler == {SCHEDULER: 0}
    assert census.delayed_per_scheduler == {SCHEDULER: 0}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"delay": 5, "not_before": "2099-01-01T00:00:00Z"}, "not both"),
        (
            {"not_before": "2030-01-01T00:00:00Z", "timeout": "2029-01-01T00:00:00Z"},
            "before the task's timeout",
        ),
        ({"delay": 7 * 3600}, "at or after its timeout"),
        ({"not_before": "2030-01-01T00:00:00"}, "timezone"),
        ({"delay": -1}, "greater than or equal"),
        ({"retry": {"max_attempts": 0}}, "greater than or equal to 1"),
        ({"retry": {"backoff_factor": 0.5}}, "greater than or equal to 1"),
        ({"retry": {"initial_delay": 10, "max_delay": 1}}, "max_delay"),
        ({"retry": {"max_attempts": 3, "tries": 2}}, "Extra inputs"),
        ({"attempt_timeout": 0}, "greater than 0"),
    ],
)
async def test_bad_delay_or_retry_is_422_and_stores_nothing(
    api: Api, backends: Backends, extra: dict[str, Any], problem: str
) -> None:
    await api.register(SCHEDULER)
    for path, body in (
        ("/task/schedule", {"scheduler": SCHEDULER, "attributes": NOOP, **extra}),
        ("/task/schedule/batch", {"tasks": [{"scheduler": SCHEDULER, "attributes": NOOP, **extra}]}),
    ):
        response = await api.http.post(path, json=body)
        assert response.status_code == 422, response.text
        assert problem in response.text
    assert await backends.store.live_count(SCHEDULER) == 0


async def test_batch_tasks_take_their_own_delays(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    response = await api.http.post(
        "/task/schedule/batch",
        json={
            "tasks": [
                {"scheduler": SCHEDULER, "attributes": NOOP, "delay": 60},
                {"scheduler": SCHEDULER, "attributes": NOOP},
            ]
        },
    )
    assert response.status_code == 201, response.text
    assert [t["state"] for t in response.json()["tasks"]] == ["delayed", "pending"]
    assert await backends.store.delayed_count() == 1


async def test_attempt_past_its_attempt_timeout_is_cancelled_and_retried(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    attributes = recording.call("slow", asynchronous=True, first_run_seconds=3600)
    task = await _schedule(
        api,
        {
            "attributes": attributes,
            "attempt_timeout": 0.5,
            "retry": {"max_attempts": 2, "initial_delay": 0.1},
        },
    )
    assert task["attempt_timeout"] == 0.5

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert final["attempts"] == 2
    assert "attempt_timeout of 0.5 s" in final["errors"][0]["error"]
    # The first run was really stopped (cancelled at its await), and before the second started.
    events = [(e.event, e.run) for e in recording.events("slow")]
    assert events == [("start", 1), ("cancelled", 1), ("start", 2), ("end", 2)]


async def test_attempt_timeout_without_retries_fails_the_task(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(
        api, {"attributes": recording.call("slow", asynchronous=True, seconds=3600), "attempt_timeout": 0.3}
    )

    async with running_consumer(settings, backends, SCHEDULER, allow=ALLOW):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert "attempt_timeout" in final["error"]
    assert [e.event for e in recording.events("slow")] == ["start", "cancelled"]


async def test_task_retry_after_overrides_the_backoff(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    policy = {"max_attempts": 2, "initial_delay": 300, "max_delay": 300}
    task = await _schedule(
        api, {"attributes": _flaky(recording, "retry_once_after", "t", after=0.2), "retry": policy}
    )

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert final["attempts"] == 2
    assert final["errors"][0]["error"] == "not yet"
    (delay,) = _delays(await _events(backends, task["id"]))
    assert delay.not_before is not None
    assert (delay.not_before - delay.at).total_seconds() <= 0.21


async def test_task_retry_without_a_policy_fails_saying_why(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, {"attributes": _flaky(recording, "retry_once_after", "t", after=0.2)})

    async with running_consumer(settings, backends, SCHEDULER, allow=ALLOW):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert final["error"].startswith("not yet (no retry")


async def test_non_retryable_failure_ends_the_task_whatever_attempts_are_left(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(
        api,
        {
            "attributes": _flaky(recording, "fail_for_good", "t"),
            "retry": {"max_attempts": 5, "initial_delay": 0.1},
        },
    )

    async with running_consumer(settings, backends, SCHEDULER, allow=ALLOW):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert final["attempts"] == 1
    assert final["error"] == "broken beyond repair (run 1)"
    assert _delays(await _events(backends, task["id"])) == []


async def test_retry_that_would_come_after_the_timeout_is_not_made(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    timeout = datetime.now(UTC) + timedelta(seconds=30)
    task = await _schedule(
        api,
        {
            "attributes": _flaky(recording, "fail_times", "t", times=5),
            "retry": {"max_attempts": 3, "initial_delay": 120, "max_delay": 120},
            "timeout": timeout.isoformat(),
        },
    )

    async with running_consumer(settings, backends, SCHEDULER, allow=ALLOW):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert final["attempts"] == 1
    assert final["error"].startswith(
        "RuntimeError: failure 1 (not retried: the next attempt would come after"
    )


async def test_scheduler_defaults_apply_to_its_tasks_that_give_none(api: Api, backends: Backends) -> None:
    policy = {
        "max_attempts": 4,
        "initial_delay": 2.0,
        "backoff_factor": 3.0,
        "max_delay": 60.0,
        "jitter": True,
    }
    response = await api.http.post(
        "/scheduler", json={"name": SCHEDULER, "retry": policy, "attempt_timeout": 90}
    )
    assert response.status_code == 201, response.text
    shown = await api.scheduler(SCHEDULER)
    assert shown["retry"] == policy
    assert shown["attempt_timeout"] == 90

    task = await _schedule(api, {"attributes": NOOP})
    own = await _schedule(api, {"attributes": NOOP, "retry": {"max_attempts": 1}, "attempt_timeout": 5})

    for answered in (task, await api.task(task["id"])):
        assert answered["retry"] == policy
        assert answered["attempt_timeout"] == 90
    for answered in (own, await api.task(own["id"])):
        assert answered["retry"]["max_attempts"] == 1
        assert answered["attempt_timeout"] == 5
    again = await api.http.post(
        "/scheduler", json={"name": SCHEDULER, "retry": policy, "attempt_timeout": 90}
    )
    assert again.status_code == 200


async def test_plain_scheduler_definition_is_stored_as_before(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    raw = await backends.store.redis.hget(f"{backends.store.key_prefix}:schedulers", SCHEDULER)
    assert raw == '{"description":"","name":"retries","queue_type":"classic","runtime":"inline"}'
    task = await _schedule(api, {"attributes": NOOP})
    assert task["retry"] is None
    assert task["attempt_timeout"] is None
    assert task["errors"] == []


async def test_delayed_task_of_a_refused_request_is_discarded_with_it(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    now = datetime.now(UTC)
    task = NewTask(uuid4(), SCHEDULER, NOOP, now + timedelta(hours=1), not_before=now + timedelta(minutes=5))
    await backends.store.create([task], now=now)
    assert await backends.store.delayed_count() == 1

    await backends.store.discard([task.id])

    assert await backends.store.delayed_count() == 0
    assert await backends.store.live_count(SCHEDULER) == 0
    assert (await backends.store.live_census()).delayed_per_scheduler == {SCHEDULER: 0}


async def test_repeated_key_of_a_delayed_task_answers_that_task(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    first = await _schedule(api, {"attributes": NOOP, "delay": 60, "key": "once"})

    again = await api.http.post(
        "/task/schedule", json={"scheduler": SCHEDULER, "attributes": NOOP, "delay": 60, "key": "once"}
    )

    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]
    assert again.json()["state"] == "delayed"
    assert await backends.store.delayed_count() == 1


async def test_plain_function_past_its_attempt_timeout_is_retried_only_once_it_has_returned(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    # A thread cannot be stopped from outside: the retry must wait for the first run to return.
    attributes = recording.call("thread", first_run_seconds=1.5)
    task = await _schedule(
        api,
        {"attributes": attributes, "attempt_timeout": 0.3, "retry": {"max_attempts": 2, "initial_delay": 0}},
    )

    async with (
        running_daemon(settings, backends),
        running_consumer(settings, backends, SCHEDULER, allow=ALLOW),
    ):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert final["attempts"] == 2
    events = recording.events("thread")
    assert [(e.event, e.run) for e in events] == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert events[2].at >= events[1].at
