"""The event loop the server processes run on: uvloop where it is installed (a dependency on
Linux and macOS), else the standard library's.

uvloop runs the loop, its timers and its socket transports in C. Here, with the work of one
request or task spread over a dozen loop callbacks and socket calls, it took 10% off the API's
CPU per one-task request (bench/results/history.md). Everything we run on the loop (uvicorn, pika's
asyncio adapter, redis-py, signal handlers, threads handing results back) works on either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coroutine)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
