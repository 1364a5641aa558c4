"""The Runtime contract: the public API for anyone who adds a way to run tasks.

A consumer owns one Runtime instance for its scheduler and calls it from one asyncio event
loop. Delivery is at-least-once: after a consumer crash the same task may be run again (with a
higher ``task.attempts``), but never while another run of it is live. A runtime whose work has
effects outside the consumer (a container, a Job) must therefore make ``run`` safe to repeat,
for instance by naming that work after the task id and attempt, and find it again in ``start``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from taskbroker.models import Task


class TaskFailed(Exception):
    """Raised by ``run`` when the task failed; its message becomes the task's ``error``.

    Any other exception from ``run`` fails the task too, with ``"<ExceptionType>: <message>"``.
    """


class TaskCancelled(Exception):
    """Raised by ``run`` when ``cancel`` stopped it. The consumer then writes nothing: whoever
    cancelled (an abort, the timeout daemon) has already recorded the final state."""


class InvalidRuntimeOptions(ValueError):
    """Raised by a runtime's constructor when the worker's ``--option`` values are wrong; the
    worker exits with the message instead of failing every task."""


@dataclass(frozen=True)
class RuntimeConfig:
    """What a consumer knows when it builds its runtime."""

    scheduler: str
    concurrency: int
    allow: tuple[str, ...] = ("runtimes.builtin",)
    options: dict[str, str] = field(default_factory=dict)


class Runtime(abc.ABC):
    """Runs the tasks of one scheduler. Subclass it and register the class under the entry point
    group ``taskbroker.runtimes``; the name you register is what ``POST /scheduler`` takes as
    ``runtime``.
    """

    name: ClassVar[str]

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config

    async def start(self) -> None:
        """Called once before the first task. Find work a crashed predecessor left behind
        (containers, Jobs) and clean it up; the broker re-runs those tasks itself."""

    async def close(self) -> None:
        """Called once at shutdown, after every run has returned or been cancelled."""

    @abc.abstractmethod
    async def run(self, task: Task) -> Any:
        """Run one attempt of ``task`` to its end and return its result.

        The return value must be JSON-serialisable; it becomes the task's ``result`` and the task
        ends ``complete``. Raise TaskFailed (or any exception) to end it ``failed``. Raise
        TaskCancelled if ``cancel`` stopped this run. May take hours: the consumer keeps the
        task's lease alive meanwhile. Must not block the event loop: run blocking work in a thread
        or another process.
        """

    @abc.abstractmethod
    async def cancel(self, task: Task) -> None:
        """Stop the live run of ``task`` (aborted, or past its timeout), then return.

        After it returns, the pending ``run`` call for this task must end promptly by raising
        TaskCancelled. Must be idempotent, and a no-op if the run has already ended or never
        started on this consumer.
        """

    async def wait_stopped(self, task: Task) -> None:
        """Return once nothing of a cancelled run of ``task`` still executes.

        At shutdown the consumer hands unfinished tasks to other replicas only after this
        returns, so a run that ``cancel`` could not stop at once (a thread, a container that
        ignores SIGTERM) never overlaps with the next attempt. The default suits runtimes whose
        ``cancel`` returns only when the work has stopped.
        """
