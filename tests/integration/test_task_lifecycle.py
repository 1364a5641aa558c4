"""What happens to a task between scheduling and its final state, with an in-process consumer and
timeout daemon, on the real servers and on the embedded pair.

"Never ran" is shown with the recorder, and a negative is only asserted after a positive that
must come later: consumers take messages in order, so once a task scheduled afterwards (the
sentinel) has completed, the consumer has already dealt with the earlier one.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.support.inprocess import Api, running_consumer
from tests.support.recorder import Recording
from tests.support.waiting import eventually

SCHEDULER = "life"
LONG_SLEEP = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 3600}}


async def _run_sentinel(api: Api, recording: Recording) -> None:
    sentinel = await api.schedule(SCHEDULER, recording.call("sentinel"))
    assert (await api.wait_for_state(sentinel["id"]))["state"] == "complete"
    assert recording.ends("sentinel") == 1


async def test_task_aborted_while_pending_never_runs(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, recording.call("victim"))

    aborted = await api.http.post(f"/task/{task['id']}/abort")
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "aborted"

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):
        await _run_sentinel(api, recording)

    assert recording.starts("victim") == 0
    final = await api.task(task["id"])
    assert final["state"] == "aborted"
    assert final["attempts"] == 0
    assert final["started_at"] is None


async def test_aborting_a_final_task_is_409_and_keeps_its_state(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"v": 2}})
    async with running_consumer(settings, backends, SCHEDULER):
        await api.wait_for_state(task["id"], "complete")

    response = await api.http.post(f"/task/{task['id']}/abort")

    assert response.status_code == 409
    assert "complete" in response.json()["detail"]
    assert (await api.task(task["id"]))["result"] == {"v": 2}


async def test_task_whose_timeout_passes_while_waiting_ends_timeout_and_never_runs(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(
        SCHEDULER, recording.call("late"), expires=datetime.now(UTC) + timedelta(seconds=0.5)
    )
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )

    async def expired_one() -> bool:
        return (await daemon.sweep()).expired == 1

    await eventually(expired_one, what="a sweep to expire the task")
    assert (await api.task(task["id"]))["state"] == "timeout"

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):
        await _run_sentinel(api, recording)

    assert recording.starts("late") == 0
    final = await api.task(task["id"])
    assert final["state"] == "timeout"
    assert final["attempts"] == 0


async def test_task_past_its_timeout_is_not_run_even_before_the_daemon_sweeps(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    expires = datetime.now(UTC) + timedelta(seconds=0.5)
    task = await api.schedule(SCHEDULER, recording.call("late"), expires=expires)

    async def past_timeout() -> bool:
        return datetime.now(UTC) > expires

    await eventually(past_timeout, what="the task's timeout to pass")
    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):
        await _run_sentinel(api, recording)

    assert recording.starts("late") == 0
    assert (await api.task(task["id"]))["state"] == "timeout"


async def test_function_outside_the_allow_list_fails_the_task_and_is_never_imported(
    api: Api, settings: Settings, backends: Backends
) -> None:
    forbidden = "tests.support.not_allowed"
    assert forbidden not in sys.modules
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, {"function": f"{forbidden}:touch"})

    async with running_consumer(settings, backends, SCHEDULER):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert forbidden in final["error"]
    assert "allow-list" in final["error"]
    assert final["result"] is None
    assert forbidden not in sys.modules


async def test_module_whose_name_only_starts_like_an_allowed_one_is_refused(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, {"function": "runtimes.builtin_evil:noop"})

    async with running_consumer(settings, backends, SCHEDULER, allow=("taskbroker.runtimes.builtin",)):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert "allow-list" in final["error"]


async def test_failing_function_ends_failed_with_its_error(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(
        SCHEDULER, {"function": "taskbroker.runtimes.builtin:fail", "kwargs": {"message": "boom 42"}}
    )

    async with running_consumer(settings, backends, SCHEDULER):
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "failed"
    assert "boom 42" in final["error"]
    assert final["attempts"] == 1


async def test_aborting_a_running_task_cancels_its_run_and_it_stays_aborted(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, LONG_SLEEP)

    # One slot: the sentinel can only run once the aborted run has really given its slot back.
    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):
        running = await api.wait_for_state(task["id"], "running")
        assert running["attempts"] == 1

        response = await api.http.post(f"/task/{task['id']}/abort")
        assert response.status_code == 200
        assert response.json()["state"] == "aborted"

        await _run_sentinel(api, recording)
        assert (await api.task(task["id"]))["state"] == "aborted"

    final = await api.task(task["id"])
    assert final["state"] == "aborted"
    assert final["result"] is None


async def test_aborting_a_running_recorded_task_stops_it_before_its_end(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, recording.call("long", asynchronous=True, seconds=3600))

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):

        async def started() -> bool:
            return recording.starts("long") == 1

        await eventually(started, what="the recorded task to start")
        assert (await api.http.post(f"/task/{task['id']}/abort")).status_code == 200
        await _run_sentinel(api, recording)

    assert recording.ends("long") == 0
    assert (await api.task(task["id"]))["state"] == "aborted"


async def test_running_task_past_its_timeout_ends_timeout_and_its_run_is_cancelled(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    stop = asyncio.Event()

    async with running_consumer(settings, backends, SCHEDULER, concurrency=1):
        task = await api.schedule(
            SCHEDULER,
            recording.call("overrun", asynchronous=True, seconds=3600),
            expires=datetime.now(UTC) + timedelta(seconds=1),
        )
        await api.wait_for_state(task["id"], "running")
        sweeping = asyncio.create_task(daemon.run(stop))
        try:
            final = await api.wait_for_state(task["id"])
        finally:
            stop.set()
            await sweeping
        await _run_sentinel(api, recording)

    assert final["state"] == "timeout"
    assert recording.starts("overrun") == 1
    assert recording.ends("overrun") == 0
    assert (await api.task(task["id"]))["state"] == "timeout"
