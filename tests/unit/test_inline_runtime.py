"""The Inline runtime on its own: the allow-list, sync and async calls, cancel, bad results."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from runtimes.base import RuntimeConfig, TaskCancelled, TaskFailed
from runtimes.inline import InlineRuntime, module_allowed
from runtimes.registry import RuntimeNotInstalled, installed_runtimes, load_runtime
from taskbroker.models import Task, TaskState, utcnow


def _task(attributes: dict[str, object]) -> Task:
    now = utcnow()
    return Task(
        id=uuid.uuid4(),
        scheduler="s",
        attributes=attributes,
        timeout=now + timedelta(hours=1),
        state=TaskState.RUNNING,
        created_at=now,
    )


@pytest.fixture
async def runtime() -> AsyncIterator[InlineRuntime]:
    built = InlineRuntime(
        RuntimeConfig(scheduler="s", concurrency=2, allow=("runtimes.builtin", "tests.unit.returns"))
    )
    await built.start()
    yield built
    await built.close()


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("runtimes.builtin", True),
        ("runtimes.builtin.sub", True),
        ("runtimes.builtin_evil", False),
        ("os", False),
    ],
)
def test_only_allow_listed_modules_and_their_submodules_are_allowed(module: str, allowed: bool) -> None:
    assert module_allowed(module, ("runtimes.builtin",)) is allowed


async def test_a_sync_function_runs_and_returns_its_value(runtime: InlineRuntime) -> None:
    result = await runtime.run(_task({"function": "runtimes.builtin:echo", "kwargs": {"a": [1, 2]}}))

    assert result == {"a": [1, 2]}


async def test_an_exception_fails_the_task_with_its_message(runtime: InlineRuntime) -> None:
    with pytest.raises(Exception, match="boom"):
        await runtime.run(_task({"function": "runtimes.builtin:fail", "kwargs": {"message": "boom"}}))


async def test_a_module_off_the_allow_list_fails_without_being_imported(runtime: InlineRuntime) -> None:
    assert "tests.support.not_allowed" not in sys.modules

    with pytest.raises(TaskFailed, match="allow-list"):
        await runtime.run(_task({"function": "tests.support.not_allowed:touch"}))

    assert "tests.support.not_allowed" not in sys.modules


@pytest.mark.parametrize(
    "attributes",
    [{}, {"function": "no-colon"}, {"function": "runtimes.builtin:echo", "args": "not a list"}],
)
async def test_invalid_attributes_fail_the_task_clearly(
    runtime: InlineRuntime, attributes: dict[str, object]
) -> None:
    with pytest.raises(TaskFailed, match="invalid attributes"):
        await runtime.run(_task(attributes))


async def test_a_missing_function_fails_the_task(runtime: InlineRuntime) -> None:
    with pytest.raises(TaskFailed, match="cannot load"):
        await runtime.run(_task({"function": "runtimes.builtin:nope"}))


async def test_cancel_stops_an_async_run_which_raises_task_cancelled(runtime: InlineRuntime) -> None:
    task = _task({"function": "runtimes.builtin:sleep", "kwargs": {"seconds": 3600}})
    run = asyncio.create_task(runtime.run(task))
    while task.id not in runtime._runs:  # noqa: ASYNC110 (the run registers on its first step)
        await asyncio.sleep(0)

    await runtime.cancel(task)

    with pytest.raises(TaskCancelled):
        await run
    await runtime.cancel(task)  # idempotent once the run has ended


async def test_a_result_that_is_not_json_fails_the_task(runtime: InlineRuntime) -> None:
    with pytest.raises(TaskFailed, match="not JSON"):
        await runtime.run(_task({"function": "tests.unit.returns:a_set"}))


def test_an_unknown_runtime_names_the_installed_ones() -> None:
    with pytest.raises(RuntimeNotInstalled, match="inline"):
        load_runtime("no-such-runtime")
    assert "inline" in installed_runtimes()
    assert load_runtime("inline") is InlineRuntime
