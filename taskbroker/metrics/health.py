"""Liveness and readiness of a long-running process (worker, timeout daemon, schedule firer), as
its metrics port answers them on ``/healthz`` and ``/readyz`` (Kubernetes probes).

The port is served by a thread, which would answer even with the event loop stuck. So each
answer is a round trip into the loop: ``/healthz`` is 200 only when the loop runs a callback
within ``timeout``; ``/readyz`` runs the process's readiness checks on the loop (Redis and
RabbitMQ answer; a worker is subscribed or deliberately paused), each bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from taskbroker.errors import TaskbrokerError

PROBE_TIMEOUT = 2.0
"""Seconds the loop (and each readiness check) may take to answer: under the usual 3 s probe timeout."""


class NotReady(Exception):
    """Raised by a readiness check; its message says what is missing."""


Check = Callable[[], Awaitable[str]]
"""A readiness check: returns what is fine ("ok", "subscribed", "paused"), raises NotReady or a
TaskbrokerError (StoreUnavailable, BrokerUnavailable) saying what is not."""


class ProcessHealth:
    """The health of one process, asked from the metrics port's thread."""

    def __init__(self, *, timeout: float = PROBE_TIMEOUT) -> None:
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the process's loop once it runs: until then the process is starting."""
        with self._lock:
            self._loop = loop

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def liveness(self) -> tuple[int, dict[str, Any]]:
        """200 when the event loop answers a callback within the timeout, else 503."""
        answer = self._on_loop(_noop(), self._timeout)
        if answer is None:
            return 503, {"detail": f"the event loop did not answer within {self._timeout} s"}
        return 200, {"status": "ok"}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """200 with every check's word, or 503 with ``{"detail": {check: what is missing}}``."""
        with self._lock:
            checks = dict(self._checks)
        found = self._on_loop(_run_checks(checks, self._timeout), self._timeout * 1.5)
        if found is None:
            return 503, {"detail": {"event_loop": f"did not answer within {self._timeout * 1.5} s"}}
        problems = {name: problem for name, (ok, problem) in found.items() if not ok}
        if problems:
            return 503, {"detail": problems}
        return 200, {name: word for name, (_ok, word) in found.items()}

    def _on_loop(self, coroutine: Any, timeout: float) -> Any:
        """The coroutine's result, run on the process's loop; None if it is not running yet or
        did not answer within ``timeout``."""
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            coroutine.close()
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop closed meanwhile
            coroutine.close()
            return None
        try:
            return future.result(timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            return None


async def _noop() -> bool:
    return True


async def _run_checks(checks: dict[str, Check], limit: float) -> dict[str, tuple[bool, str]]:
    async def one(check: Check) -> tuple[bool, str]:
        try:
            return True, await asyncio.wait_for(check(), limit)
        except TimeoutError:
            return False, f"did not answer within {limit} s"
        except (NotReady, TaskbrokerError) as exc:
            return False, str(exc)

    names = sorted(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))
