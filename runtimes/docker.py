"""Docker: run each task attempt in its own container through the Docker Engine HTTP API.

One container per attempt, named ``taskbroker-<task id>-<attempt>`` and labelled with the task,
attempt, scheduler and consumer: create, start, wait for the exit, read the tail of its output,
remove. The engine is reached with httpx on the consumer's event loop (see runtimes.docker_engine
for why not the ``docker`` SDK), so a long wait costs a socket, not a thread. Tested against
podman's Docker-compatible service; any engine answering API v1.41 works.

Cancel SIGKILLs the container; ``run`` then removes it and raises TaskCancelled. Orphans (the
containers of a consumer that died) are found in ``start``: see ``DockerRuntime.start``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from taskbroker.errors import TaskbrokerError
from taskbroker.models import Task
from taskbroker.runtimes.base import (
    RunRegistry,
    Runtime,
    RuntimeConfig,
    RuntimeConfigError,
    TaskCancelled,
    TaskFailed,
    parse_attributes,
)
from taskbroker.runtimes.docker_engine import DockerEngine, EngineError
from taskbroker.runtimes.docker_spec import LABEL_PREFIX, DockerOptions, DockerTaskSpec, PullPolicy

log = structlog.get_logger("taskbroker.runtime.docker")

T = TypeVar("T")

MARKER_LABEL = LABEL_PREFIX
TASK_LABEL = f"{LABEL_PREFIX}.task"
ATTEMPT_LABEL = f"{LABEL_PREFIX}.attempt"
SCHEDULER_LABEL = f"{LABEL_PREFIX}.scheduler"
CONSUMER_LABEL = f"{LABEL_PREFIX}.consumer"


def container_name(task: Task) -> str:
    """The same name for the same attempt, so a repeated ``run`` finds (and replaces) its container."""
    return f"taskbroker-{task.id}-{task.attempts}"


@dataclass
class _Attempt:
    """The live run of one task on this consumer."""

    name: str
    cancel_signal: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by ``cancel``, to end a pull or a wait for the exit at once (``_unless_cancelled``)."""
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once ``run`` has removed the container (or given up trying)."""


class DockerRuntime(Runtime):
    """Runs a task's ``image`` with its ``command``, ``env``, ``workdir`` and ``labels``.

    Worker options (``--option KEY=VALUE``): ``images`` (comma-separated fnmatch patterns; none
    allowed until set), ``pull`` (never | missing | always; default missing), ``log_tail_lines``
    (default 100), ``log_tail_bytes`` (default 16384), ``docker_host`` (default ``DOCKER_HOST``,
    else unix:///var/run/docker.sock), ``orphan_sweep_interval`` (seconds, default 60).
    """

    name = "docker"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self.options = DockerOptions.parse(config.options)
        try:
            self.engine = DockerEngine(self.options.docker_host)
        except ValueError as exc:
            raise RuntimeConfigError(str(exc)) from exc
        self._attempts: RunRegistry[_Attempt] = RunRegistry()
        self._sweeper: asyncio.Task[None] | None = None
        self._log = log.bind(scheduler=config.scheduler, consumer=config.consumer_id)

    # Crash adoption

    async def start(self) -> None:
        """Remove the containers dead consumers of this scheduler left behind, now and then every
        ``orphan_sweep_interval`` seconds.

        A container of this scheduler is an orphan unless its task is running now under the live
        lease of the consumer named in its label: a replica sharing this engine keeps its
        containers, a dead one's (its lease lapsed, or the task was taken over or finished) are
        killed and removed. The periodic sweep catches a predecessor whose lease had not lapsed
        yet when this consumer started, and replicas that die later. Without a ``lease_holder``
        (a runtime built outside a worker) every container of the scheduler counts as an orphan,
        once, at start. An orphan's result is not recovered: the broker re-runs its task as a new
        attempt. Never raises: an unreachable engine or Redis is logged and the consumer starts
        anyway (tasks then fail clearly until the engine is back).
        """
        await self._sweep_orphans()
        if self.config.lease_holder is not None:
            self._sweeper = asyncio.create_task(self._sweep_periodically(), name="docker-orphan-sweep")

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.orphan_sweep_interval)
            try:
                await self._sweep_orphans()
            except Exception:  # a surprise must not end the sweeping for good
                self._log.exception("docker.orphan_sweep_failed")

    async def _sweep_orphans(self) -> None:
        try:
            containers = await self.engine.list_containers(
                {MARKER_LABEL: "1", SCHEDULER_LABEL: self.config.scheduler}
            )
        except EngineError as exc:
            self._log.warning("docker.orphan_sweep_skipped", error=str(exc))
            return
        live_names = {attempt.name for attempt in self._attempts}
        for container in containers:
            if container.name in live_names:
                continue
            task_id = container.labels.get(TASK_LABEL, "")
            owner = container.labels.get(CONSUMER_LABEL, "")
            if self.config.lease_holder is not None:
                try:
                    holder = await self.config.lease_holder(task_id)
                except TaskbrokerError as exc:
                    self._log.warning("docker.orphan_sweep_skipped", error=str(exc))
                    return
                if holder is not None and holder == owner:
                    continue
            try:
                await self.engine.remove(container.id)
            except EngineError as exc:
                self._log.warning("docker.orphan_not_removed", container=container.name, error=str(exc))
                continue
            self._log.info(
                "docker.orphan_removed",
                container=container.name,
                task_id=task_id,
                previous_consumer=owner,
                state=container.state,
            )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.engine.close()

    # Running

    async def run(self, task: Task) -> Any:
        spec = parse_attributes(DockerTaskSpec, task, runtime=self.name)
        if not self.options.image_allowed(spec.image):
            allowed = ", ".join(self.options.images) or "none (set the worker option images=PATTERN,...)"
            raise TaskFailed(
                f"image {spec.image} is not allowed on scheduler {self.config.scheduler}; allowed: {allowed}"
            )
        attempt = _Attempt(container_name(task))
        # Registered until _remove has removed the container, which may outlive run (shutdown).
        self._attempts.add(task, attempt)
        bound = self._log.bind(task_id=str(task.id), container=attempt.name)
        try:
            return await self._run_container(task, spec, attempt, bound)
        except EngineError as exc:
            if self._attempts.is_cancelled(task):
                raise TaskCancelled(str(task.id)) from None
            raise TaskFailed(str(exc)) from exc
        finally:
            # Remove even when the consumer gives up on us (asyncio cancellation at shutdown):
            # the removal runs on, and wait_stopped waits for it.
            removal = asyncio.ensure_future(self._remove(task, attempt, bound))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(removal)

    async def _run_container(self, task: Task, spec: DockerTaskSpec, attempt: _Attempt, bound: Any) -> Any:
        await self._unless_cancelled(self._ensure_image(spec.image), attempt, task)
        body = self._container_body(task, spec)
        # A container of this very attempt may have survived a dead run: replace it. (Removing
        # first, rather than on a name conflict, because podman answers that conflict with 500.)
        await self.engine.remove(attempt.name)
        await self.engine.create(attempt.name, body)
        if self._attempts.is_cancelled(task):
            raise TaskCancelled(str(task.id))
        await self.engine.start(attempt.name)
        if self._attempts.is_cancelled(task):
            # cancel() may have tried to kill before the start went through.
            await self.engine.kill(attempt.name)
            raise TaskCancelled(str(task.id))
        bound.info("docker.started", image=spec.image)
        # Cancel ends the wait at once, whatever the engine does; the removal kills the container.
        exit_code = await self._unless_cancelled(self.engine.wait(attempt.name), attempt, task)
        if self._attempts.is_cancelled(task):
            raise TaskCancelled(str(task.id))
        logs = self._clip(await self.engine.logs(attempt.name, tail=self.options.log_tail_lines))
        bound.info("docker.exited", exit_code=exit_code)
        if exit_code != 0:
            raise TaskFailed(f"container exited with code {exit_code}; last output:\n{logs}")
        return {"exit_code": 0, "logs": logs}

    async def _unless_cancelled(self, work: Awaitable[T], attempt: _Attempt, task: Task) -> T:
        """Await ``work`` (a pull, the wait for the exit), but raise TaskCancelled at once if the
        run is cancelled meanwhile, so ``run`` ends promptly even if the engine is slow to answer."""
        job = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(attempt.cancel_signal.wait())
        try:
            await asyncio.wait([job, cancelled], return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job
        if job.cancelled():
            raise TaskCancelled(str(task.id))
        return job.result()

    async def _ensure_image(self, image: str) -> None:
        policy = self.options.pull
        if policy is PullPolicy.ALWAYS or (
            policy is PullPolicy.MISSING and not await self.engine.image_exists(image)
        ):
            await self.engine.pull(image)
        elif policy is PullPolicy.NEVER and not await self.engine.image_exists(image):
            raise TaskFailed(
                f"image {image} is not present on the container engine and this scheduler's pull "
                "policy is never: load it on the engine's host first"
            )

    def _container_body(self, task: Task, spec: DockerTaskSpec) -> dict[str, Any]:
        """Only the harmless fields: the engine's defaults decide everything a task may not."""
        body: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{key}={value}" for key, value in spec.env.items()],
            "Labels": {
                **spec.labels,
                MARKER_LABEL: "1",
                TASK_LABEL: str(task.id),
                ATTEMPT_LABEL: str(task.attempts),
                SCHEDULER_LABEL: self.config.scheduler,
                CONSUMER_LABEL: self.config.consumer_id,
            },
            "Tty": False,
            "OpenStdin": False,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "HostConfig": {"Privileged": False, "AutoRemove": False},
        }
        if spec.command is not None:
            body["Cmd"] = spec.command
        if spec.workdir is not None:
            body["WorkingDir"] = spec.workdir
        return body

    def _clip(self, logs: str) -> str:
        encoded = logs.encode()
        if len(encoded) <= self.options.log_tail_bytes:
            return logs
        return encoded[-self.options.log_tail_bytes :].decode("utf-8", errors="ignore")

    async def _remove(self, task: Task, attempt: _Attempt, bound: Any) -> None:
        """Force-remove the attempt's container (killing it if it still runs), then forget it.
        If the engine cannot be reached the container stays until an orphan sweep finds it."""
        try:
            await self.engine.remove(attempt.name)
        except EngineError as exc:
            bound.warning("docker.remove_failed", error=str(exc))
        finally:
            attempt.gone.set()
            self._attempts.remove(task, attempt)

    # Cancelling

    async def cancel(self, task: Task) -> None:
        attempt = self._attempts.mark_cancelled(task)
        if attempt is None:
            return
        attempt.cancel_signal.set()
        try:
            await self.engine.kill(attempt.name)
        except EngineError as exc:
            self._log.warning("docker.kill_failed", task_id=str(task.id), error=str(exc))

    async def wait_stopped(self, task: Task) -> None:
        attempt = self._attempts.get(task)
        if attempt is not None:
            await attempt.gone.wait()
