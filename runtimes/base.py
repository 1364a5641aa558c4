"""The Runtime contract: the public API for anyone who adds a way to run tasks.

A consumer process serves one scheduler. It builds one Runtime instance from the class registered
under the scheduler's runtime name, calls ``start`` once, then ``run`` for each task it claims
(up to its concurrency at once, all on one asyncio event loop), ``cancel`` when a running task is
aborted, times out or must be given up, and ``close`` once at shutdown. docs/runtimes.md walks
through writing, testing and packaging a runtime; ``taskbroker.runtimes.testing`` checks one against this
contract.

Three helpers at the end of this module do the parts of ``run`` and ``cancel`` that every
runtime needs alike: ``parse_attributes``, ``RunRegistry`` and ``cancel_raises_task_cancelled``.

Delivery is at least once: a task may be run again, with a higher ``task.attempts``, after its
consumer crashed or lost Redis, but never while another run of it is live (the broker fences the
old run first). A runtime whose work has effects outside the consumer process (a container, a
Kubernetes Job, a file) must make ``run`` safe to repeat: name that work after the task id and
attempt, and let ``start`` clean up what a crashed predecessor left running.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from taskbroker.models import Task

Attributes = TypeVar("Attributes", bound=BaseModel)
RunState = TypeVar("RunState")


class TaskFailed(Exception):
    """Raised by ``run`` when the attempt failed; its message becomes the task's ``error``.

    Write the message for the person who scheduled the task: what failed and, if the output
    shows why, the last lines of it (keep it to a few KiB). Any other exception from ``run``
    fails the attempt too, with ``"<ExceptionType>: <message>"`` as its error; neither ever stops
    the consumer.

    A failed attempt is retried when the task's retry policy has attempts left
    (docs/retries.md). Raise ``TaskFailed(message, retry=False)`` for a failure that no retry
    can mend (invalid attributes, a missing image): the task then fails at once.
    """

    def __init__(self, *args: object, retry: bool = True) -> None:
        super().__init__(*args)
        self.retry = retry
        """False: fail the task now, whatever attempts its retry policy has left."""


class TaskRetry(Exception):
    """Raised by ``run`` to ask for another attempt: the attempt counts as failed with
    ``message`` as its error, and the task is retried if its retry policy has attempts left
    (``max_attempts`` is honoured; without a policy the task fails, saying so), ``after``
    seconds from now when given, else after the policy's backoff. A retry that would come after
    the task's timeout is not made: the task fails.
    """

    def __init__(self, after: float | None = None, message: str = "") -> None:
        super().__init__(message or "the task asked for a retry")
        if after is not None and not 0 <= after < float("inf"):
            raise ValueError("after must be a finite number of seconds, at least 0")
        self.after = after
        self.message = message


class TaskCancelled(Exception):
    """Raised by ``run`` when ``cancel`` stopped it. The consumer then writes nothing: whoever
    cancelled (an abort, the timeout daemon) has already recorded the final state, or the task
    goes back to the queue (shutdown, lost lease) to run again."""


class RuntimeConfigError(ValueError):
    """Raised by a runtime's ``__init__`` or ``start`` when its options (``RuntimeConfig``) are
    wrong or the environment cannot support it. The consumer exits at once with this message,
    so say which option is wrong and what would be right."""


@dataclass(frozen=True)
class RuntimeConfig:
    """What a consumer knows when it builds its runtime.

    ``options`` are the consumer's ``--option KEY=VALUE`` flags, uninterpreted: each runtime
    documents the keys it reads, and raises RuntimeConfigError for a bad value. ``allow`` is the
    consumer's ``--allow`` list (Inline's module allow-list); other runtimes may ignore it.
    """

    scheduler: str
    concurrency: int
    allow: tuple[str, ...] = ("taskbroker.runtimes.builtin",)
    options: dict[str, str] = field(default_factory=dict)
    consumer_id: str = ""
    """The consumer that owns this runtime: label external work with it."""
    lease_holder: Callable[[str], Awaitable[str | None]] | None = None
    """Given a task id, the consumer id whose live lease runs that task now (None if none). With
    it, ``start`` can tell work of a live replica sharing the same engine from a dead
    predecessor's: only the latter is an orphan."""


class Runtime(abc.ABC):
    """Runs the tasks of one scheduler. Subclass it and register the class under the entry point
    group ``taskbroker.runtimes``; the name you register is what ``POST /scheduler`` takes as
    ``runtime``.

    The consumer calls every method from one event loop, never from a thread; several ``run``
    calls are in flight at once (up to the consumer's concurrency), so keep per-run state keyed
    by ``task.id`` (a ``RunRegistry``). Methods must not block the loop: the consumer's
    heartbeats and cancel notices share it.
    """

    name: ClassVar[str]
    """The name the runtime is registered under (for logs and messages); the registry refuses
    a class whose ``name`` differs from its entry point's."""

    def __init__(self, config: RuntimeConfig) -> None:
        """Keep the config; validate ``config.options`` here and raise RuntimeConfigError for a
        bad one. Do no I/O: that belongs in ``start``."""
        self.config = config

    async def start(self) -> None:
        """Called once before the first ``run``. Connect to what you need, and adopt what a crashed
        predecessor on this host left behind: stop and remove containers, Jobs or processes of
        runs that no consumer owns any more. Do not re-run their tasks; the broker republishes
        them once their leases lapse, and they arrive through ``run`` with a higher attempt.
        Raise RuntimeConfigError if the runtime cannot work here (the consumer exits)."""

    async def close(self) -> None:
        """Called once at shutdown, after every ``run`` has returned or been cancelled and waited
        for. Release connections and threads; leave nothing running."""

    @abc.abstractmethod
    async def run(self, task: Task) -> Any:
        """Run one attempt of ``task`` to its end and return its result.

        ``task.attributes`` is the client's JSON object, unvalidated: check it here and raise
        TaskFailed saying what is wrong (``parse_attributes`` does both). The return value must
        be JSON-serialisable (keep it small: it is stored in Redis with the task); it becomes the
        task's ``result`` and the task ends ``complete``. Raise TaskFailed (or any exception) to
        fail the attempt: the task ends ``failed``, or is retried when its retry policy has
        attempts left (``TaskFailed(..., retry=False)`` never is); raise TaskRetry to ask for a
        retry, optionally ``after`` some seconds. A failure to even submit the work (an image
        that cannot be pulled) must raise too, at once, never leave the task ``running``. Raise
        TaskCancelled if ``cancel`` stopped this run.

        May take hours: the consumer keeps the task's lease alive meanwhile. ``cancel`` can arrive
        at any point after ``run`` was called, including while it is still starting the work, so
        register the run (by ``task.id``) before the first ``await``. The same task can come
        again as a later attempt after a crash: name external work after ``task.id`` and
        ``task.attempts`` so that a repeat never collides with, or silently reuses, an old run.
        A run that ignores ``cancel`` at shutdown has its coroutine cancelled
        (``asyncio.CancelledError``): stop the work in a ``finally`` block.
        """

    @abc.abstractmethod
    async def cancel(self, task: Task) -> None:
        """Stop the live run of ``task`` (aborted, past its timeout or its ``attempt_timeout``,
        or its lease lost), then return.

        Return quickly: start the stop (a signal, a delete call) and leave slow escalation to the
        run or to ``wait_stopped``; the consumer calls ``cancel`` from its heartbeat. After it
        returns, the pending ``run`` call for this task must end promptly by raising
        TaskCancelled, even if the work had not started yet. Must be idempotent (it may be
        called again, or concurrently), and a no-op if the run has already ended or never
        started on this consumer.
        """

    async def wait_stopped(self, task: Task) -> None:
        """Return once nothing of a cancelled run of ``task`` still executes.

        At shutdown, and after a run cancelled at its ``attempt_timeout``, the consumer lets
        the next attempt start only after this returns, so a run that ``cancel`` could not stop
        at once (a thread, a container that ignores SIGTERM) never overlaps with the next one.
        Return at once if nothing of the task is running. The default suits runtimes whose
        ``run`` raises TaskCancelled only once the work has stopped.
        """


# Helpers for run and cancel


def parse_attributes(model: type[Attributes], task: Task, *, runtime: str) -> Attributes:
    """``task.attributes`` validated as ``model``, or TaskFailed listing every invalid field.

    Call it first in ``run``, with ``runtime=self.name``: the attributes come unvalidated from
    an API client, and the error (``invalid attributes for the <runtime> runtime: field:
    problem; ...``) is written for that client. Give ``model`` ``extra="forbid"`` so that a
    misspelt attribute fails the task instead of running it with a default. The failure is not
    retried (``retry=False``): the same attributes would fail again.
    """
    try:
        return model.model_validate(task.attributes)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'attributes'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise TaskFailed(f"invalid attributes for the {runtime} runtime: {problems}", retry=False) from exc


class RunRegistry(Generic[RunState]):
    """A runtime's live runs by task id, and which of them ``cancel`` has reached.

    Register the run's state (whatever ``cancel`` and ``wait_stopped`` need: a future, a
    container name, a pid) before the first ``await`` in ``run``, so that a cancel arriving
    while the work is still starting finds it: ``with self.runs.registered(task, state):``, or
    ``add`` and ``remove`` when cleanup outlives ``run``. In ``cancel``, ``mark_cancelled``
    hands back the state only the first time, which makes ``cancel`` idempotent and a no-op
    for a run that ended or never started here. The record is per run: a later attempt of the
    same task starts uncancelled.
    """

    def __init__(self) -> None:
        self._runs: dict[UUID, RunState] = {}
        self._cancelled: set[UUID] = set()

    @contextlib.contextmanager
    def registered(self, task: Task, state: RunState) -> Iterator[RunState]:
        """``add`` for the length of the block, ``remove`` at its end however it ends."""
        self.add(task, state)
        try:
            yield state
        finally:
            self.remove(task, state)

    def add(self, task: Task, state: RunState) -> None:
        """Make ``state`` the live, uncancelled run of ``task``."""
        self._runs[task.id] = state
        self._cancelled.discard(task.id)

    def remove(self, task: Task, state: RunState) -> None:
        """Forget the run ``state``; a no-op if ``task``'s live run is another one by now."""
        if self._runs.get(task.id) is state:
            del self._runs[task.id]
            self._cancelled.discard(task.id)

    def get(self, task: Task) -> RunState | None:
        """The live run of ``task``, if it has one here."""
        return self._runs.get(task.id)

    def mark_cancelled(self, task: Task) -> RunState | None:
        """Record that ``cancel`` reached ``task``'s live run and return it; None if there is no
        live run or it was marked already, so the caller has nothing (more) to stop."""
        state = self._runs.get(task.id)
        if state is None or task.id in self._cancelled:
            return None
        self._cancelled.add(task.id)
        return state

    def is_cancelled(self, task: Task) -> bool:
        """True once ``cancel`` reached ``task``'s live run: ``run`` must then raise TaskCancelled."""
        return task.id in self._cancelled

    def __iter__(self) -> Iterator[RunState]:
        """The live runs (a snapshot: adding or removing meanwhile is safe), e.g. to stop them in
        ``close``."""
        return iter(tuple(self._runs.values()))


@contextlib.contextmanager
def cancel_raises_task_cancelled(task: Task, cancelled: Callable[[], bool]) -> Iterator[None]:
    """Turn the CancelledError that ``cancel`` causes in ``run`` into TaskCancelled.

    Wrap the ``await`` in ``run`` with it when ``cancel`` stops the run by cancelling a future
    or task that ``run`` awaits (a coroutine, a thread's future, a watch). The CancelledError
    becomes TaskCancelled only if ``cancelled()`` says ``cancel`` reached this run, and only if
    the task executing ``run`` is not being cancelled itself: a consumer that gives up on
    ``run`` at shutdown must get its CancelledError back. With a RunRegistry, pass
    ``lambda: runs.is_cancelled(task)`` and enter this inside ``runs.registered(...)`` (the
    registry forgets the run when that block ends).
    """
    try:
        yield
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if cancelled() and (current is None or not current.cancelling()):
            raise TaskCancelled(str(task.id)) from None
        raise
