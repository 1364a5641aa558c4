"""Inline: run a function of an allow-listed Python module inside the consumer process.

Two gates, both checked before anything runs: the module must be on the consumer's allow-list
(``--allow``: the module or a package above it), and the name must be a public function of that
module (``runnable``). Without the second, allowing a module would allow everything it imports
(``taskbroker.runtimes.builtin:Any``, ``os`` through ``module:os``) and every class it defines.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from taskbroker.models import Task
from taskbroker.runtimes.base import (
    RunRegistry,
    Runtime,
    RuntimeConfig,
    TaskFailed,
    cancel_raises_task_cancelled,
    parse_attributes,
)


class InlineCall(BaseModel):  # type: ignore[no-redef]  # pydantic-mypy clash on a field named kwargs
    """The attributes an Inline task carries."""

    model_config = ConfigDict(extra="ignore")

    function: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", examples=["taskbroker.runtimes.builtin:echo"]
    )
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


def module_allowed(module: str, allow: tuple[str, ...]) -> bool:
    """True if ``module`` is an allow-listed module or inside an allow-listed package."""
    return any(module == entry or module.startswith(entry + ".") for entry in allow)


def runnable(module: ModuleType, name: str) -> Callable[..., Any] | None:
    """The function ``module.name`` if Inline may run it, else None: a public name (no leading
    ``_``) of a plain Python function (``def`` or ``async def``; not a class, builtin, callable
    object or partial) that the module defines itself or names in its ``__all__`` (how a module
    says it re-exports an imported function on purpose)."""
    if name.startswith("_"):
        return None
    target = getattr(module, name, None)
    if not inspect.isfunction(target):
        return None
    exported = getattr(module, "__all__", ())
    if target.__module__ == module.__name__ or (isinstance(exported, list | tuple) and name in exported):
        return target
    return None


class _SyncCall:
    """One plain function call handed to a thread; ``result`` is settled on the loop."""

    __slots__ = ("args", "ended", "function", "key", "kwargs", "result", "stopped")

    def __init__(
        self,
        key: Hashable,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        result: asyncio.Future[Any],
    ) -> None:
        self.key = key
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.result = result
        self.ended = False
        self.stopped: asyncio.Future[None] | None = None


class SyncCallThreads:
    """Runs plain functions on ``size`` long-lived threads and hands their outcomes back to the
    event loop in batches.

    Cheaper per call than ``loop.run_in_executor``: a call is one object on a ``SimpleQueue``
    (no concurrent Future with its Condition, no chained asyncio future), and the calls that end
    between two loop wake-ups share one ``call_soon_threadsafe`` (one self-pipe write) instead
    of one each. The threads are daemons so a forgotten ``close`` cannot hold the process open;
    ``close`` waits for calls still running, as a ThreadPoolExecutor's exit would.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_SyncCall | None] = queue.SimpleQueue()
        self._ended: deque[tuple[_SyncCall, Any, BaseException | None]] = deque()
        self._wake_scheduled = False
        self._running: dict[Hashable, _SyncCall] = {}
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(
        self, key: Hashable, function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Queue a call known by ``key``; await the returned future for its outcome. Cancelling
        that future before a thread takes the call means it never runs; after that the function
        runs on (``wait_stopped`` tells when it ends) and its outcome is dropped."""
        loop = asyncio.get_running_loop()
        if not self._threads:
            self._loop = loop
            for number in range(self._size):
                thread = threading.Thread(target=self._work, name=f"{self._name}_{number}", daemon=True)
                thread.start()
                self._threads.append(thread)
        call = _SyncCall(key, function, args, kwargs, loop.create_future())
        self._running[key] = call
        self._calls.put(call)
        return call.result

    def _work(self) -> None:
        loop, calls, ended = self._loop, self._calls, self._ended
        assert loop is not None
        while (call := calls.get()) is not None:
            outcome: tuple[_SyncCall, Any, BaseException | None]
            if call.result.cancelled():  # a read of one attribute, safe across threads under the GIL
                outcome = (call, None, None)
            else:
                try:
                    outcome = (call, call.function(*call.args, **call.kwargs), None)
                except BaseException as exc:  # as ThreadPoolExecutor: the awaiting task gets it
                    outcome = (call, None, exc)
            ended.append(outcome)
            # _settle clears the flag before it drains, so an outcome appended while the flag
            # is set is always seen by the drain that flag announced.
            if not self._wake_scheduled:
                self._wake_scheduled = True
                try:
                    loop.call_soon_threadsafe(self._settle)
                except RuntimeError:  # the loop is closed: nobody waits for outcomes any more
                    return
            del call, outcome  # hold no result while waiting for the next call

    def _settle(self) -> None:
        self._wake_scheduled = False
        ended = self._ended
        while ended:
            call, value, error = ended.popleft()
            call.ended = True
            if self._running.get(call.key) is call:
                del self._running[call.key]
            if not call.result.done():
                if error is None:
                    call.result.set_result(value)
                else:
                    call.result.set_exception(error)
            if call.stopped is not None and not call.stopped.done():
                call.stopped.set_result(None)

    async def wait_stopped(self, key: Hashable) -> None:
        """Return once the call known by ``key`` is no longer running (at once if there is none)."""
        call = self._running.get(key)
        if call is None:
            return
        if call.stopped is None:
            call.stopped = asyncio.get_running_loop().create_future()
        await asyncio.shield(call.stopped)

    async def close(self) -> None:
        """Let the threads end once the calls already queued are done; wait for running ones."""
        for _ in self._threads:
            self._calls.put(None)
        self._threads.clear()
        for key in list(self._running):
            await self.wait_stopped(key)


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
        self._threads = SyncCallThreads(config.concurrency, name="inline")
        self._runs: RunRegistry[asyncio.Future[Any]] = RunRegistry()
        self._resolved: dict[str, tuple[Callable[..., Any], bool]] = {}

    def _resolve(self, function: str) -> tuple[Callable[..., Any], bool]:
        """The callable and whether it is a coroutine function, remembered once found (the
        allow-list is fixed for the runtime's life, and a loaded module stays loaded)."""
        if (found := self._resolved.get(function)) is not None:
            return found
        module_name, _, attribute = function.partition(":")
        if not module_allowed(module_name, self.config.allow):
            if module_allowed(f"taskbroker.{module_name}", self.config.allow):
                # Before 0.2 taskbroker installed its runtimes as a top-level `runtimes` package.
                raise TaskFailed(
                    f"{module_name!r} is now 'taskbroker.{module_name}' (taskbroker installs everything "
                    f"under its own name): name the function 'taskbroker.{function}'",
                    retry=False,
                )
            raise TaskFailed(
                f"module {module_name!r} is not on this consumer's allow-list {list(self.config.allow)}: "
                "start the consumer with --allow to permit it",
                retry=False,
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TaskFailed(f"cannot load {function!r}: {exc}") from exc
        if not hasattr(module, attribute):
            raise TaskFailed(
                f"cannot load {function!r}: module {module_name!r} has no {attribute!r}", retry=False
            )
        target = runnable(module, attribute)
        if target is None:
            raise TaskFailed(
                f"{function!r} may not run: Inline runs only public functions (def or async def) "
                f"defined in {module_name!r} itself or named in its __all__, not classes, builtins, "
                "callable objects, names it imports or names starting with '_'",
                retry=False,
            )
        found = self._resolved[function] = (target, inspect.iscoroutinefunction(target))
        return found

    async def run(self, task: Task) -> Any:
        call = parse_attributes(InlineCall, task, runtime=self.name)
        target, is_coroutine = self._resolve(call.function)
        run: asyncio.Future[Any]
        if is_coroutine:
            run = asyncio.ensure_future(target(*call.args, **call.kwargs))
        else:
            run = self._threads.submit(task.id, target, call.args, call.kwargs)
        with (
            self._runs.registered(task, run),
            cancel_raises_task_cancelled(task, lambda: self._runs.is_cancelled(task)),
        ):
            value = await run
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise TaskFailed(f"{call.function} returned a value that is not JSON: {exc}") from exc
        return value

    async def cancel(self, task: Task) -> None:
        run = self._runs.mark_cancelled(task)
        if run is not None:
            run.cancel()  # a no-op if it has just ended: run() then returns its outcome

    async def wait_stopped(self, task: Task) -> None:
        await self._threads.wait_stopped(task.id)

    async def close(self) -> None:
        await self._threads.close()
