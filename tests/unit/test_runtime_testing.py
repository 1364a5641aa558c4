"""The conformance checks catch the mistakes runtime authors actually make."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from taskbroker.models import Task
from taskbroker.runtimes.base import Runtime, RuntimeConfig, TaskCancelled
from taskbroker.runtimes.testing import RuntimeConformance


class SleepyRuntime(Runtime):
    """Sleeps for ``attributes["seconds"]``; registers its run only after starting the work (the
    bug: a cancel that arrives meanwhile is lost), and returns None when cancelled (the bug:
    the consumer would record a cancelled run as complete)."""

    name = "sleepy"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._runs: dict[UUID, asyncio.Task[Any]] = {}

    async def run(self, task: Task) -> Any:
        await asyncio.sleep(0.01)  # "starting the work"
        if task.attributes.get("fail"):
            raise RuntimeError("failed as asked")
        sleeping = self._runs[task.id] = asyncio.create_task(asyncio.sleep(task.attributes["seconds"]))
        try:
            await sleeping
        except asyncio.CancelledError:
            if task.attributes.get("raise_on_cancel"):
                raise TaskCancelled(str(task.id)) from None
            return None
        finally:
            self._runs.pop(task.id, None)
        return "slept"

    async def cancel(self, task: Task) -> None:
        if (sleeping := self._runs.get(task.id)) is not None:
            sleeping.cancel()


async def _sleeping(runtime: Runtime, task: Task) -> bool:
    return isinstance(runtime, SleepyRuntime) and task.id in runtime._runs


def _conformance(**long_run: Any) -> RuntimeConformance:
    return RuntimeConformance(
        SleepyRuntime,
        succeeds={"seconds": 0},
        fails={"fail": True},
        runs_until_cancelled={"seconds": 3600, **long_run},
        started=_sleeping,
        deadline=5,
    )


async def test_a_runtime_that_returns_instead_of_raising_task_cancelled_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="instead of raising TaskCancelled"):
        await _conformance().check("cancel_mid_run_raises_task_cancelled")


async def test_a_runtime_that_loses_a_cancel_while_starting_fails_the_check() -> None:
    conformance = _conformance(raise_on_cancel=True)
    await conformance.check("cancel_mid_run_raises_task_cancelled")

    with pytest.raises(AssertionError, match="gave up after 5 s waiting for run\\(\\) to end"):
        await conformance.check("cancel_while_starting_raises_task_cancelled")


async def test_an_unknown_check_is_refused_naming_the_checks() -> None:
    with pytest.raises(ValueError, match="success_returns_a_json_result"):
        await _conformance().check("no_such_check")
