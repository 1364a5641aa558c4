"""Inline: run an allow-listed Python callable inside the consumer process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtimes.base import Runtime, RuntimeConfig, TaskCancelled, TaskFailed
from taskbroker.models import Task


class InlineCall(BaseModel):  # type: ignore[no-redef]  # pydantic-mypy clash on a field named kwargs
    """The attributes an Inline task carries."""

    model_config = ConfigDict(extra="ignore")

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", examples=["runtimes.builtin:echo"])
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


def module_allowed(module: str, allow: tuple[str, ...]) -> bool:
    """True if ``module`` is an allow-listed module or inside an allow-listed package."""
    return any(module == entry or module.startswith(entry + ".") for entry in allow)


class InlineRuntime(Runtime):
    """Coroutine functions are awaited on the consumer's loop; plain functions run in a thread
    pool as large as the consumer's concurrency.

    Cancel cancels a coroutine at its next await. A thread cannot be stopped from outside: the
    consumer stops waiting for it and the task ends aborted or timed out at once, but the thread
    runs on until the function returns, and its result is discarded; at shutdown the consumer
    keeps the task's lease until the thread ends (``wait_stopped``), so the next attempt never
    overlaps it. Write long sync functions to return early, or make them async.
    """

    name = "inline"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="inline")
        self._runs: dict[UUID, asyncio.Future[Any]] = {}
        self._cancelled: set[UUID] = set()
        self._threads: dict[UUID, concurrent.futures.Future[Any]] = {}

    def _resolve(self, function: str) -> Any:
        module_name, _, attribute = function.partition(":")
        if not module_allowed(module_name, self.config.allow):
            raise TaskFailed(
                f"module {module_name!r} is not on this consumer's allow-list {list(self.config.allow)}: "
                "start the consumer with --allow to permit it"
            )
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise TaskFailed(f"cannot load {function!r}: {exc}") from exc
        if not callable(target):
            raise TaskFailed(f"{function!r} is not callable")
        return target

    async def run(self, task: Task) -> Any:
        try:
            call = InlineCall.model_validate(task.attributes)
        except ValidationError as exc:
            raise TaskFailed(
                f"invalid attributes for the inline runtime: {exc.errors(include_url=False)}"
            ) from exc
        target = self._resolve(call.function)
        if inspect.iscoroutinefunction(target):
            run: asyncio.Future[Any] = asyncio.ensure_future(target(*call.args, **call.kwargs))
        else:
            thread = self._executor.submit(functools.partial(target, *call.args, **call.kwargs))
            self._threads[task.id] = thread
            thread.add_done_callback(lambda _: self._threads.pop(task.id, None))
            run = asyncio.wrap_future(thread)
        self._runs[task.id] = run
        try:
            value = await run
        except asyncio.CancelledError:
            if task.id in self._cancelled:
                raise TaskCancelled(str(task.id)) from None
            raise
        finally:
            self._runs.pop(task.id, None)
            self._cancelled.discard(task.id)
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise TaskFailed(f"{call.function} returned a value that is not JSON: {exc}") from exc
        return value

    async def cancel(self, task: Task) -> None:
        run = self._runs.get(task.id)
        if run is not None and not run.done():
            self._cancelled.add(task.id)
            run.cancel()

    async def wait_stopped(self, task: Task) -> None:
        thread = self._threads.get(task.id)
        if thread is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(thread)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
