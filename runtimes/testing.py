"""Conformance checks a runtime author runs against their Runtime: the contract of runtimes.base,
executed. Framework-free (each check raises AssertionError), so it fits any test runner; with
pytest, parametrize over ``RuntimeConformance.CHECKS``::

    conformance = RuntimeConformance(
        MyRuntime,
        succeeds={"command": ["true"]},
        fails={"command": ["false"]},
        runs_until_cancelled={"command": ["sleep", "3600"]},
    )

    @pytest.mark.parametrize("check", RuntimeConformance.CHECKS)
    async def test_my_runtime_conforms(check: str) -> None:
        await conformance.check(check)

Each check builds a fresh runtime, calls ``start`` and always ``close``, and bounds every wait by
``deadline`` seconds so a runtime that hangs fails the check instead of the test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, ClassVar

import orjson

from taskbroker.models import Task, TaskState, utcnow
from taskbroker.runtimes.base import Runtime, RuntimeConfig, TaskCancelled

StartedProbe = Callable[[Runtime, Task], Awaitable[bool]]
"""True once the run of the task is really under way (its process, container or coroutine)."""


def make_task(attributes: Mapping[str, Any], *, scheduler: str = "conformance", attempts: int = 1) -> Task:
    """A running task as a consumer hands it to ``run``, after its claim."""
    now = utcnow()
    return Task(
        id=uuid.uuid4(),
        scheduler=scheduler,
        attributes=dict(attributes),
        timeout=now + timedelta(hours=1),
        state=TaskState.RUNNING,
        created_at=now,
        started_at=now,
        attempts=attempts,
    )


async def _yield_a_few_times(runtime: Runtime, task: Task) -> bool:
    for _ in range(10):
        await asyncio.sleep(0)
    return True


class RuntimeConformance:
    """The contract checks for one runtime class and three kinds of task it can run.

    ``succeeds``, ``fails`` and ``runs_until_cancelled`` are task attributes: one that completes,
    one that fails, and one that would run far longer than ``deadline`` unless cancelled.
    ``started`` tells when a run of ``runs_until_cancelled`` is really under way (default: after a
    few turns of the event loop), so the mid-run checks cancel live work, not a run still
    starting; the ``cancel_while_starting`` check covers that case separately.
    """

    CHECKS: ClassVar[tuple[str, ...]] = (
        "success_returns_a_json_result",
        "failure_raises_an_exception_other_than_cancelled",
        "cancel_mid_run_raises_task_cancelled",
        "cancel_while_starting_raises_task_cancelled",
        "cancel_is_idempotent",
        "cancel_after_the_run_ended_is_a_no_op",
        "cancel_of_an_unknown_task_is_a_no_op",
        "cancel_stops_only_its_own_task",
        "wait_stopped_returns_once_a_cancelled_run_stopped",
        "a_later_attempt_runs_after_a_cancelled_one",
    )

    def __init__(
        self,
        runtime_class: Callable[[RuntimeConfig], Runtime],
        *,
        succeeds: Mapping[str, Any],
        fails: Mapping[str, Any],
        runs_until_cancelled: Mapping[str, Any],
        config: RuntimeConfig | None = None,
        started: StartedProbe = _yield_a_few_times,
        deadline: float = 60.0,
    ) -> None:
        self.runtime_class = runtime_class
        self.succeeds = succeeds
        self.fails = fails
        self.runs_until_cancelled = runs_until_cancelled
        self.config = config or RuntimeConfig(scheduler="conformance", concurrency=4)
        self.started = started
        self.deadline = deadline

    async def check(self, name: str) -> None:
        """Run one check by name (one of CHECKS)."""
        if name not in self.CHECKS:
            raise ValueError(f"no conformance check {name!r}; the checks are {', '.join(self.CHECKS)}")
        check: Callable[[Runtime], Awaitable[None]] = getattr(self, f"_{name}")
        async with self._runtime() as runtime:
            await check(runtime)

    async def check_all(self) -> None:
        """Run every check, stopping at the first that fails."""
        for name in self.CHECKS:
            await self.check(name)

    # Helpers

    @asynccontextmanager
    async def _runtime(self) -> AsyncIterator[Runtime]:
        runtime = self.runtime_class(self.config)
        await self._bounded(runtime.start(), "start() to return")
        try:
            yield runtime
        finally:
            await self._bounded(runtime.close(), "close() to return")

    async def _bounded(self, work: Awaitable[Any], what: str) -> Any:
        try:
            async with asyncio.timeout(self.deadline):
                return await work
        except TimeoutError:
            raise AssertionError(f"gave up after {self.deadline} s waiting for {what}") from None

    async def _start_long_run(self, runtime: Runtime, task: Task) -> asyncio.Task[Any]:
        run = asyncio.create_task(runtime.run(task))

        async def under_way() -> None:
            while not await self.started(runtime, task):
                if run.done():
                    raise AssertionError(f"the run ended before it was cancelled: {run.result()!r}")
                await asyncio.sleep(0.05)

        await self._bounded(under_way(), "the long run to be under way")
        assert not run.done(), f"the long run ended by itself: {run.result()!r}"
        return run

    async def _expect_cancelled(self, run: asyncio.Task[Any], what: str) -> None:
        try:
            outcome = await self._bounded(asyncio.shield(run), f"run() to end after {what}")
        except TaskCancelled:
            return
        except AssertionError:
            run.cancel()  # a run that ignored cancel(): stop it so it cannot outlive the check
            with contextlib.suppress(BaseException):
                await run
            raise
        except Exception as exc:
            raise AssertionError(
                f"run() raised {type(exc).__name__}: {exc} after {what}, not TaskCancelled"
            ) from exc
        raise AssertionError(f"run() returned {outcome!r} after {what} instead of raising TaskCancelled")

    # The checks

    async def _success_returns_a_json_result(self, runtime: Runtime) -> None:
        result = await self._bounded(runtime.run(make_task(self.succeeds)), "a succeeding run")
        try:
            orjson.dumps(result)
        except TypeError as exc:
            raise AssertionError(f"the result {result!r} is not JSON-serialisable: {exc}") from exc

    async def _failure_raises_an_exception_other_than_cancelled(self, runtime: Runtime) -> None:
        try:
            result = await self._bounded(runtime.run(make_task(self.fails)), "a failing run")
        except TaskCancelled as exc:
            raise AssertionError("a failing run raised TaskCancelled, which records nothing") from exc
        except AssertionError:
            raise
        except Exception as exc:
            if not str(exc):
                raise AssertionError(
                    f"the failure {type(exc).__name__} has no message for the task's error"
                ) from exc
            return
        raise AssertionError(f"a failing run returned {result!r} instead of raising")

    async def _cancel_mid_run_raises_task_cancelled(self, runtime: Runtime) -> None:
        task = make_task(self.runs_until_cancelled)
        run = await self._start_long_run(runtime, task)
        await self._bounded(runtime.cancel(task), "cancel() to return")
        await self._expect_cancelled(run, "cancel()")

    async def _cancel_while_starting_raises_task_cancelled(self, runtime: Runtime) -> None:
        task = make_task(self.runs_until_cancelled)
        run = asyncio.create_task(runtime.run(task))
        await asyncio.sleep(0)  # run() has taken its first step, and may be starting the work
        await self._bounded(runtime.cancel(task), "cancel() to return")
        await self._expect_cancelled(run, "cancel() while it was starting")

    async def _cancel_is_idempotent(self, runtime: Runtime) -> None:
        task = make_task(self.runs_until_cancelled)
        run = await self._start_long_run(runtime, task)
        await self._bounded(asyncio.gather(runtime.cancel(task), runtime.cancel(task)), "two cancels")
        await self._bounded(runtime.cancel(task), "a third cancel() to return")
        await self._expect_cancelled(run, "repeated cancel()")
        await self._bounded(runtime.cancel(task), "cancel() after the run ended")

    async def _cancel_after_the_run_ended_is_a_no_op(self, runtime: Runtime) -> None:
        task = make_task(self.succeeds)
        await self._bounded(runtime.run(task), "a succeeding run")
        await self._bounded(runtime.cancel(task), "cancel() after the run ended")
        await self._bounded(runtime.wait_stopped(task), "wait_stopped() after the run ended")
        await self._bounded(runtime.run(make_task(self.succeeds)), "the next run")

    async def _cancel_of_an_unknown_task_is_a_no_op(self, runtime: Runtime) -> None:
        task = make_task(self.runs_until_cancelled)
        await self._bounded(runtime.cancel(task), "cancel() of a task never run")
        await self._bounded(runtime.wait_stopped(task), "wait_stopped() of a task never run")

    async def _cancel_stops_only_its_own_task(self, runtime: Runtime) -> None:
        doomed, other = make_task(self.runs_until_cancelled), make_task(self.runs_until_cancelled)
        doomed_run = await self._start_long_run(runtime, doomed)
        other_run = await self._start_long_run(runtime, other)
        await self._bounded(runtime.cancel(doomed), "cancel() to return")
        await self._expect_cancelled(doomed_run, "cancel()")
        assert not other_run.done(), "cancelling one task ended another task's run"
        succeeding = await self._bounded(runtime.run(make_task(self.succeeds)), "a run beside a live one")
        orjson.dumps(succeeding)
        await self._bounded(runtime.cancel(other), "cancel() of the other task")
        await self._expect_cancelled(other_run, "cancel() of the other task")

    async def _wait_stopped_returns_once_a_cancelled_run_stopped(self, runtime: Runtime) -> None:
        task = make_task(self.runs_until_cancelled)
        run = await self._start_long_run(runtime, task)
        await self._bounded(runtime.cancel(task), "cancel() to return")
        await self._bounded(runtime.wait_stopped(task), "wait_stopped() after cancel()")
        await self._expect_cancelled(run, "cancel() and wait_stopped()")

    async def _a_later_attempt_runs_after_a_cancelled_one(self, runtime: Runtime) -> None:
        first = make_task(self.runs_until_cancelled)
        run = await self._start_long_run(runtime, first)
        await self._bounded(runtime.cancel(first), "cancel() to return")
        await self._expect_cancelled(run, "cancel()")
        await self._bounded(runtime.wait_stopped(first), "wait_stopped() after cancel()")
        # The same task id again, as the broker redelivers it: no state of the old attempt may stick.
        again = first.model_copy(update={"attributes": dict(self.succeeds), "attempts": first.attempts + 1})
        result = await self._bounded(runtime.run(again), "the next attempt of a cancelled task")
        orjson.dumps(result)
