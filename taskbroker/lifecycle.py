"""Process lifecycle shared by the long-running processes: stop signals, backoff, stoppable waits."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Awaitable, Callable

import structlog

from taskbroker.errors import TaskbrokerError


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; each process then drains in its own way and exits 0."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; return True at once if ``stop`` is (or becomes) set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


class Backoff:
    """Exponential backoff with full jitter, so replicas that lost a server together do not
    reconnect in lockstep."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self._first = first
        self._cap = cap
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._first * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


async def repeat_until_stopped(
    step: Callable[[], Awaitable[object]],
    *,
    interval: float,
    stop: asyncio.Event,
    failed_event: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Run ``step`` every ``interval`` seconds until ``stop``; a step in progress always completes.

    A TaskbrokerError (Redis or RabbitMQ unreachable) is logged as ``failed_event`` and retried
    with jittered backoff instead of the interval, so the process outlives an outage.
    """
    backoff = Backoff()
    while not stop.is_set():
        try:
            await step()
            backoff.reset()
            delay = interval
        except TaskbrokerError as exc:
            if on_failure is not None:
                on_failure()
            delay = backoff.next_delay()
            structlog.get_logger("taskbroker").warning(failed_event, error=str(exc), retry_in=round(delay, 2))
        await sleep_unless_stopped(stop, delay)
