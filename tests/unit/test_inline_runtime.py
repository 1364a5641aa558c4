"""The Inline runtime on its own: the allow-list, sync and async calls, cancel, bad results."""

from __future__ import annotations

import asyncio
import math
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from taskbroker.models import Task, TaskState, utcnow
from taskbroker.runtimes.base import RuntimeConfig, TaskCancelled, TaskFailed
from taskbroker.runtimes.builtin import MAX_SLEEP_SECONDS
from taskbroker.runtimes.inline import InlineRuntime, module_allowed
from taskbroker.runtimes.registry import RuntimeNotInstalled, installed_runtimes, load_runtime
from tests.unit import blocking


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
        RuntimeConfig(
            scheduler="s",
            concurrency=2,
            allow=(
                "taskbroker.runtimes.builtin",
                "tests.unit.returns",
                "tests.unit.blocking",
                "tests.unit.inline_targets",
            ),
        )
    )
    await built.start()
    yield built
    await built.close()


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("taskbroker.runtimes.builtin", True),
        ("taskbroker.runtimes.builtin.sub", True),
        ("runtimes.builtin_evil", False),
        ("os", False),
    ],
)
def test_only_allow_listed_modules_and_their_submodules_are_allowed(module: str, allowed: bool) -> None:
    assert module_allowed(module, ("taskbroker.runtimes.builtin",)) is allowed


async def test_a_sync_function_runs_and_returns_its_value(runtime: InlineRuntime) -> None:
    result = await runtime.run(
        _task({"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"a": [1, 2]}})
    )

    assert result == {"a": [1, 2]}


async def test_an_exception_fails_the_task_with_its_message(runtime: InlineRuntime) -> None:
    with pytest.raises(Exception, match="boom"):
        await runtime.run(
            _task({"function": "taskbroker.runtimes.builtin:fail", "kwargs": {"message": "boom"}})
        )


async def test_a_module_off_the_allow_list_fails_without_being_imported(runtime: InlineRuntime) -> None:
    assert "tests.support.not_allowed" not in sys.modules

    with pytest.raises(TaskFailed, match="allow-list"):
        await runtime.run(_task({"function": "tests.support.not_allowed:touch"}))

    assert "tests.support.not_allowed" not in sys.modules


async def test_a_function_named_by_its_name_before_0_2_fails_saying_its_new_name(
    runtime: InlineRuntime,
) -> None:
    with pytest.raises(TaskFailed, match=r"name the function 'taskbroker\.runtimes\.builtin:echo'"):
        await runtime.run(_task({"function": "runtimes.builtin:echo"}))


@pytest.mark.parametrize(
    "attributes",
    [{}, {"function": "no-colon"}, {"function": "taskbroker.runtimes.builtin:echo", "args": "not a list"}],
)
async def test_invalid_attributes_fail_the_task_clearly(
    runtime: InlineRuntime, attributes: dict[str, object]
) -> None:
    with pytest.raises(TaskFailed, match="invalid attributes"):
        await runtime.run(_task(attributes))


@pytest.mark.parametrize(
    ("name", "result"),
    [
        pytest.param("defined", {"ran": "defined"}, id="defined-here"),
        pytest.param("defined_async", "defined_async", id="async-defined-here"),
        pytest.param("wait_for_release", "x", id="imported-but-in-__all__"),
    ],
)
async def test_a_public_function_defined_in_the_module_or_named_in_its_all_runs(
    runtime: InlineRuntime, name: str, result: object
) -> None:
    blocking.released.set()
    args = ["x"] if name == "wait_for_release" else []

    assert await runtime.run(_task({"function": f"tests.unit.inline_targets:{name}", "args": args})) == result


@pytest.mark.parametrize(
    "function",
    [
        pytest.param("tests.unit.inline_targets:imported", id="imported-function"),
        pytest.param("tests.unit.inline_targets:join", id="imported-by-its-own-name"),
        pytest.param("tests.unit.inline_targets:special_form", id="imported-special-form"),
        pytest.param("tests.unit.inline_targets:Any", id="imported-typing-name"),
        pytest.param("taskbroker.runtimes.builtin:Any", id="builtin-module-import"),
        pytest.param("tests.unit.inline_targets:builtin", id="builtin-function"),
        pytest.param("tests.unit.inline_targets:functools", id="imported-module"),
        pytest.param("tests.unit.inline_targets:Listed", id="class-in-__all__"),
        pytest.param("tests.unit.inline_targets:_Callable", id="private-class"),
        pytest.param("tests.unit.inline_targets:instance", id="callable-instance"),
        pytest.param("tests.unit.inline_targets:partial", id="partial"),
        pytest.param("tests.unit.inline_targets:_private", id="private-function"),
        pytest.param("tests.unit.inline_targets:__getattribute__", id="dunder"),
    ],
)
async def test_any_other_callable_of_an_allowed_module_fails_the_task_unrun(
    runtime: InlineRuntime, function: str
) -> None:
    with pytest.raises(TaskFailed, match="only public functions") as refused:
        await runtime.run(_task({"function": function}))

    assert "allow-list" not in str(refused.value)  # not the "module not allowed" refusal


@pytest.mark.parametrize(
    "function",
    ["tests.unit.inline_targets:instance.__call__", "tests.unit.inline_targets:defined.__globals__"],
)
async def test_a_dotted_attribute_path_is_refused_as_invalid(runtime: InlineRuntime, function: str) -> None:
    with pytest.raises(TaskFailed, match="invalid attributes"):
        await runtime.run(_task({"function": function}))


@pytest.mark.parametrize(
    "call",
    [
        pytest.param({"kwargs": {"seconds": 1e308}}, id="huge"),
        pytest.param({"args": [1e308]}, id="huge-positional"),
        pytest.param({"kwargs": {"seconds": 10**400}}, id="huge-int"),
        pytest.param({"kwargs": {"seconds": MAX_SLEEP_SECONDS + 1}}, id="over-the-maximum"),
        pytest.param({"kwargs": {"seconds": math.inf}}, id="infinite"),
        pytest.param({"kwargs": {"seconds": math.nan}}, id="nan"),
        pytest.param({"kwargs": {"seconds": -1}}, id="negative"),
        pytest.param({"kwargs": {"seconds": "10"}}, id="text"),
        pytest.param({"kwargs": {"seconds": True}}, id="bool"),
        pytest.param({"kwargs": {"seconds": None}}, id="null"),
    ],
)
async def test_builtin_sleep_refuses_a_duration_it_should_not_wait_at_once(
    runtime: InlineRuntime, call: dict[str, object]
) -> None:
    run = runtime.run(_task({"function": "taskbroker.runtimes.builtin:sleep", **call}))

    with pytest.raises(ValueError, match=f"seconds from 0 to {MAX_SLEEP_SECONDS:g}"):
        await asyncio.wait_for(run, timeout=30)  # bounds a hang only: the refusal is immediate


@pytest.mark.parametrize("seconds", [0, 0.01, 0.5])
async def test_builtin_sleep_waits_a_duration_within_bounds_and_returns_it(
    runtime: InlineRuntime, seconds: float
) -> None:
    assert (
        await runtime.run(
            _task({"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": seconds}})
        )
        == seconds
    )


async def test_a_missing_function_fails_the_task(runtime: InlineRuntime) -> None:
    with pytest.raises(TaskFailed, match="cannot load"):
        await runtime.run(_task({"function": "taskbroker.runtimes.builtin:nope"}))


async def test_cancel_stops_an_async_run_which_raises_task_cancelled(runtime: InlineRuntime) -> None:
    task = _task({"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 3600}})
    run = asyncio.create_task(runtime.run(task))
    while runtime._runs.get(task) is None:  # noqa: ASYNC110 (the run registers on its first step)
        await asyncio.sleep(0)

    await runtime.cancel(task)

    with pytest.raises(TaskCancelled):
        await run
    await runtime.cancel(task)  # idempotent once the run has ended


async def test_many_sync_calls_at_once_each_get_their_own_result(runtime: InlineRuntime) -> None:
    tasks = [_task({"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": n}}) for n in range(50)]

    results = await asyncio.gather(*(runtime.run(t) for t in tasks))

    assert results == [{"n": n} for n in range(50)]


def _blocking_task(name: str) -> Task:
    return _task({"function": f"{blocking.__name__}:wait_for_release", "args": [name]})


async def _hold_both_threads(runtime: InlineRuntime) -> list[tuple[Task, asyncio.Task[Any]]]:
    """Start two blocking calls and return once both run: the runtime's two threads are busy."""
    blocking.released.clear()
    blocking.calls.clear()
    held = [_blocking_task(name) for name in ("first", "second")]
    runs = [asyncio.create_task(runtime.run(task)) for task in held]
    for _ in held:
        await asyncio.to_thread(blocking.entered.acquire)
    return list(zip(held, runs, strict=True))


async def test_a_cancelled_sync_run_ends_at_once_and_wait_stopped_waits_for_its_function(
    runtime: InlineRuntime,
) -> None:
    (first, first_run), (_, second_run) = await _hold_both_threads(runtime)

    await runtime.cancel(first)
    with pytest.raises(TaskCancelled):
        await first_run
    stopped = asyncio.create_task(runtime.wait_stopped(first))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not stopped.done()  # its function still runs on its thread

    blocking.released.set()
    await stopped
    assert await second_run == "second"


async def test_a_sync_call_cancelled_before_a_thread_takes_it_never_runs(runtime: InlineRuntime) -> None:
    holders = await _hold_both_threads(runtime)
    queued = _blocking_task("queued")
    run = asyncio.create_task(runtime.run(queued))
    while runtime._runs.get(queued) is None:  # noqa: ASYNC110 (the run registers on its first step)
        await asyncio.sleep(0)

    await runtime.cancel(queued)
    with pytest.raises(TaskCancelled):
        await run
    blocking.released.set()
    await asyncio.gather(*(r for _, r in holders))
    await runtime.wait_stopped(queued)

    assert blocking.calls == ["first", "second"]


async def test_a_result_that_is_not_json_fails_the_task(runtime: InlineRuntime) -> None:
    with pytest.raises(TaskFailed, match="not JSON"):
        await runtime.run(_task({"function": "tests.unit.returns:a_set"}))


def test_an_unknown_runtime_names_the_installed_ones() -> None:
    with pytest.raises(RuntimeNotInstalled, match="inline"):
        load_runtime("no-such-runtime")
    assert "inline" in installed_runtimes()
    assert load_runtime("inline") is InlineRuntime
