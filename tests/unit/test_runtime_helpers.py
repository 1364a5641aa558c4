"""The helpers every runtime uses for the parts of ``run`` and ``cancel`` they all share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from taskbroker.runtimes.base import (
    RunRegistry,
    TaskCancelled,
    TaskFailed,
    cancel_raises_task_cancelled,
    parse_attributes,
)
from taskbroker.runtimes.testing import make_task


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: int = Field(gt=0)


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    retries: int = 0
    limits: Limits | None = None


class _State:
    """Some runtime's per-run state: the registry holds it as it is."""


# parse_attributes


def test_valid_attributes_become_the_model() -> None:
    job = parse_attributes(Job, make_task({"image": "busybox", "limits": {"cpu": 2}}), runtime="jobs")

    assert job == Job(image="busybox", limits=Limits(cpu=2))


@pytest.mark.parametrize(
    ("attributes", "complaint"),
    [
        ({}, "image: Field required"),
        ({"image": ["not", "text"]}, "image: Input should be a valid string"),
        ({"image": "busybox", "imgae": "typo"}, "imgae: Extra inputs are not permitted"),
        ({"image": "busybox", "retries": "many"}, "retries: Input should be a valid integer"),
        ({"image": "busybox", "limits": {"cpu": 0}}, "limits.cpu: Input should be greater than 0"),
    ],
)
def test_invalid_attributes_fail_the_task_naming_the_runtime_and_each_field(
    attributes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(TaskFailed) as failure:
        parse_attributes(Job, make_task(attributes), runtime="jobs")

    message = str(failure.value)
    assert message.startswith("invalid attributes for the jobs runtime: ")
    assert complaint in message
    assert "https://" not in message  # pydantic's help links are not for the person who scheduled it


def test_every_problem_is_listed_not_only_the_first() -> None:
    with pytest.raises(TaskFailed) as failure:
        parse_attributes(Job, make_task({"retries": "many", "extra": 1}), runtime="jobs")

    assert str(failure.value) == (
        "invalid attributes for the jobs runtime: image: Field required; "
        "retries: Input should be a valid integer, unable to parse string as an integer; "
        "extra: Extra inputs are not permitted"
    )


# RunRegistry


def test_a_registered_run_is_found_by_its_task_only_while_registered() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    task, other = make_task({}), make_task({})
    state = _State()

    with runs.registered(task, state):
        assert runs.get(task) is state
        assert runs.get(other) is None
        assert list(runs) == [state]

    assert runs.get(task) is None
    assert list(runs) == []


def test_a_run_that_fails_is_removed_all_the_same() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    task = make_task({})

    with pytest.raises(RuntimeError), runs.registered(task, _State()):
        raise RuntimeError("the work failed")

    assert runs.get(task) is None


def test_only_the_first_cancel_of_a_live_run_gets_the_run() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    task = make_task({})
    state = _State()

    with runs.registered(task, state):
        assert not runs.is_cancelled(task)
        assert runs.mark_cancelled(task) is state
        assert runs.mark_cancelled(task) is None  # a second cancel: nothing left to do
        assert runs.is_cancelled(task)


def test_cancel_of_a_run_that_ended_or_never_started_gets_nothing() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    ended, unknown = make_task({}), make_task({})
    with runs.registered(ended, _State()):
        pass

    assert runs.mark_cancelled(ended) is None
    assert runs.mark_cancelled(unknown) is None
    assert not runs.is_cancelled(ended)


def test_a_later_attempt_of_a_cancelled_task_starts_uncancelled() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    first = make_task({})
    second = first.model_copy(update={"attempts": 2})
    with runs.registered(first, _State()):
        runs.mark_cancelled(first)

    with runs.registered(second, _State()):
        assert not runs.is_cancelled(second)


def test_removing_a_run_leaves_a_newer_run_of_the_same_task_registered() -> None:
    runs: RunRegistry[_State] = RunRegistry()
    task = make_task({})
    old, new = _State(), _State()
    runs.add(task, old)
    runs.add(task, new)
    runs.mark_cancelled(task)

    runs.remove(task, old)  # the old run's cleanup finished late

    assert runs.get(task) is new
    assert runs.is_cancelled(task)


# cancel_raises_task_cancelled


async def _run_until_cancelled(cancelled: bool) -> tuple[asyncio.Task[None], asyncio.Future[None]]:
    """A ``run`` awaiting its work inside the helper, and the work its ``cancel`` would cancel."""
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    awaiting = asyncio.Event()
    task = make_task({})

    async def run() -> None:
        with cancel_raises_task_cancelled(task, lambda: cancelled):
            awaiting.set()  # no await in between: once the test wakes, run waits on the work
            await work

    running = asyncio.create_task(run())
    await awaiting.wait()
    return running, work


async def test_work_stopped_by_cancel_ends_the_run_with_task_cancelled() -> None:
    running, work = await _run_until_cancelled(cancelled=True)

    work.cancel()

    with pytest.raises(TaskCancelled):
        await running


async def test_a_cancelled_error_that_cancel_did_not_cause_stays_a_cancelled_error() -> None:
    running, work = await _run_until_cancelled(cancelled=False)

    work.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_consumer_giving_up_on_the_run_still_sees_its_cancelled_error() -> None:
    running, _ = await _run_until_cancelled(cancelled=True)

    running.cancel()  # the consumer cancels run itself (shutdown), after cancel() was called

    with pytest.raises(asyncio.CancelledError):
        await running
    assert running.cancelled()


async def test_other_outcomes_pass_through_unchanged() -> None:
    task = make_task({})

    with pytest.raises(TaskFailed, match="the work failed"), cancel_raises_task_cancelled(task, lambda: True):
        raise TaskFailed("the work failed")
    with cancel_raises_task_cancelled(task, lambda: True):
        result = await asyncio.sleep(0, result="done")
    assert result == "done"
