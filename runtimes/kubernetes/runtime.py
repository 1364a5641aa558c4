"""KubernetesRuntime: run each task attempt as one ``batch/v1`` Job and report how it ended.

Safe to repeat (the base contract): the Job is named after the task id and attempt, so a
repeated create of the same attempt adopts the existing Job, and a new attempt first deletes
the Jobs of earlier attempts, so a task re-run by the broker never runs beside its old Job.

Crash recovery: each consumer holds a ``coordination.k8s.io`` Lease named after itself, renewed
every third of ``consumer_lease`` seconds, and labels its Jobs with that name. At start and at
every renewal a consumer deletes the unfinished Jobs of its scheduler whose consumer's Lease has
lapsed: a dead consumer's Jobs stop, and the broker re-runs their tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog

from taskbroker.models import Task
from taskbroker.runtimes.base import (
    RunRegistry,
    Runtime,
    RuntimeConfig,
    TaskCancelled,
    TaskFailed,
    cancel_raises_task_cancelled,
    parse_attributes,
)
from taskbroker.runtimes.kubernetes.cluster import (
    Cluster,
    JobVanished,
    KubernetesUnavailable,
    metadata,
    name_of,
    outcome,
)
from taskbroker.runtimes.kubernetes.manifest import (
    CONSUMER,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    SCHEDULER,
    TASK_ID,
    build_job,
    label_value,
    scheduler_selector,
    task_selector,
)
from taskbroker.runtimes.kubernetes.options import JobAttributes, KubernetesOptions

log = structlog.get_logger("taskbroker.runtime.kubernetes")

STOPPED_MEMORY = 1024
"""Cancelled runs remembered for ``wait_stopped``; older ones are forgotten."""


def consumer_identity() -> str:
    """This consumer's name in Kubernetes: a valid label value and Lease name."""
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:40].strip("-") or "host"
    return f"tb-{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class _JobRun:
    namespace: str
    name: str
    work: asyncio.Future[Any] | None = None
    """Everything run() does for this Job, so cancel() can interrupt any step of it."""


class KubernetesRuntime(Runtime):
    """Attributes: ``image``, ``command``, ``env``, ``resources``, ``namespace`` (JobAttributes).
    Worker options: see KubernetesOptions; no image runs until ``images`` allows it."""

    name = "kubernetes"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self.options = KubernetesOptions.from_worker_options(config.options)
        self.identity = consumer_identity()
        self._cluster: Cluster | None = None
        self._connecting = asyncio.Lock()
        self._runs: RunRegistry[_JobRun] = RunRegistry()
        self._stopping: OrderedDict[UUID, _JobRun] = OrderedDict()
        self._lease_held = False
        self._keeper: asyncio.Task[None] | None = None
        self._log = log.bind(scheduler=config.scheduler, consumer=self.identity)

    async def _connected(self) -> Cluster:
        async with self._connecting:
            if self._cluster is None:
                self._cluster = await Cluster.connect(self.options)
            return self._cluster

    # Lifecycle

    async def start(self) -> None:
        """Take this consumer's Lease and delete Jobs that dead consumers left running. An
        unreachable API is logged, not raised: the consumer starts, and each attempt reports it."""
        try:
            await self._renew_and_sweep()
        except KubernetesUnavailable as exc:
            self._log.warning("kubernetes.start_incomplete", error=str(exc))
        self._keeper = asyncio.create_task(self._keep_lease(), name="kubernetes-lease")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._cluster is not None:
            with contextlib.suppress(KubernetesUnavailable):
                await self._cluster.drop_lease(self.options.namespace, self.identity)
            await self._cluster.close()

    async def _renew_and_sweep(self) -> None:
        cluster = await self._connected()
        await self._hold_lease(cluster)
        await self._delete_orphans(cluster)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.options.consumer_lease / 3)
            try:
                await self._renew_and_sweep()
            except KubernetesUnavailable as exc:
                self._log.warning("kubernetes.lease_renewal_failed", error=str(exc))
            except (
                Exception
            ) as exc:  # this loop must outlive any surprise, or peers take our Jobs for orphans
                self._log.exception("kubernetes.lease_renewal_error", error=f"{type(exc).__name__}: {exc}")

    async def _hold_lease(self, cluster: Cluster) -> None:
        await cluster.hold_lease(
            self.options.namespace,
            self.identity,
            labels=_scheduler_labels(self.config.scheduler),
            seconds=self.options.consumer_lease,
        )
        self._lease_held = True

    async def _delete_orphans(self, cluster: Cluster) -> None:
        """Delete this scheduler's unfinished Jobs whose consumer holds no live Lease."""
        selector = scheduler_selector(self.config.scheduler)
        live = await cluster.live_leases(self.options.namespace, selector)
        live.add(self.identity)
        for namespace in self.options.allowed_namespaces:
            for job in await cluster.list_jobs(namespace, selector):
                labels = metadata(job).labels or {}
                if (
                    labels.get(CONSUMER) in live
                    or outcome(job) is not None
                    or metadata(job).deletion_timestamp
                ):
                    continue
                await cluster.delete_job(namespace, name_of(job))
                self._log.warning(
                    "kubernetes.orphan_deleted",
                    job=name_of(job),
                    namespace=namespace,
                    task_id=labels.get(TASK_ID),
                    dead_consumer=labels.get(CONSUMER),
                )

    # Running

    def _check_allowed(self, attributes: JobAttributes) -> str:
        namespace = attributes.namespace or self.options.namespace
        if namespace not in self.options.allowed_namespaces:
            raise TaskFailed(
                f"namespace {namespace!r} is not allowed for this scheduler; allowed: "
                f"{list(self.options.allowed_namespaces)} (worker option namespaces=...)"
            )
        if not self.options.images:
            raise TaskFailed(
                f"image {attributes.image!r} is not allowed: this scheduler allows no image until its "
                "workers are started with --option images=PATTERN[,PATTERN...] (fnmatch patterns)"
            )
        if not self.options.image_allowed(attributes.image):
            raise TaskFailed(
                f"image {attributes.image!r} is not on this scheduler's image allow-list "
                f"{list(self.options.images)} (worker option images=...)"
            )
        return namespace

    async def run(self, task: Task) -> Any:
        attributes = parse_attributes(JobAttributes, task, runtime=self.name)
        namespace = self._check_allowed(attributes)
        job = build_job(
            task,
            attributes,
            self.options,
            namespace=namespace,
            scheduler=self.config.scheduler,
            consumer=self.identity,
            now=datetime.now(UTC),
        )
        run = _JobRun(namespace, name_of(job))
        bound = self._log.bind(task_id=str(task.id), job=run.name, namespace=namespace)
        with (
            self._runs.registered(task, run),
            cancel_raises_task_cancelled(task, lambda: self._runs.is_cancelled(task)),
        ):
            run.work = asyncio.ensure_future(self._run_job(task, job, run, bound))
            return await run.work

    async def _run_job(self, task: Task, job: Any, run: _JobRun, bound: Any) -> Any:
        cluster = await self._connected()
        if not self._lease_held:
            # Without our Lease, peers would take our Jobs for a dead consumer's.
            await self._hold_lease(cluster)
        await self._delete_superseded(cluster, task, run, bound)
        if self._runs.is_cancelled(task):
            raise TaskCancelled(str(task.id))
        _, adopted = await cluster.create_job(job)
        if adopted:
            await cluster.relabel_job(run.namespace, run.name, {CONSUMER: self.identity})
            bound.info("kubernetes.job_adopted")
        else:
            bound.info("kubernetes.job_created", deadline=job.spec.active_deadline_seconds)
        if self._runs.is_cancelled(task):
            # cancel() may have deleted before our create reached the server.
            await cluster.delete_job(run.namespace, run.name)
            raise TaskCancelled(str(task.id))
        try:
            _, final = await cluster.wait_finished(run.namespace, run.name)
        except JobVanished:
            if self._runs.is_cancelled(task):
                raise TaskCancelled(str(task.id)) from None
            raise TaskFailed(f"Job {run.namespace}/{run.name} was deleted before it finished") from None
        tail = await cluster.log_tail(run.namespace, run.name, self.options.log_tail)
        bound.info("kubernetes.job_finished", succeeded=final.succeeded, reason=final.reason)
        if final.succeeded:
            return {"job": run.name, "namespace": run.namespace, "log": tail}
        where = f"Job {run.namespace}/{run.name}"
        if final.reason == "DeadlineExceeded":
            problem = (
                f"{where} exceeded its deadline of {job.spec.active_deadline_seconds} s "
                f"(the task's timeout) and was stopped: {final.message}"
            )
        else:
            problem = f"{where} failed ({final.reason}): {final.message}"
        raise TaskFailed(f"{problem}\nlog tail:\n{tail}" if tail else problem)

    async def _delete_superseded(self, cluster: Cluster, task: Task, run: _JobRun, bound: Any) -> None:
        """Stop the Jobs of this task's earlier attempts, and wait until they are gone, so the
        new attempt never runs beside an old one (its consumer died, the broker re-ran it)."""
        for old in await cluster.list_jobs(run.namespace, task_selector(task)):
            if name_of(old) == run.name or outcome(old) is not None:
                continue
            await cluster.delete_job(run.namespace, name_of(old))
            bound.warning("kubernetes.superseded_job_deleted", old_job=name_of(old))
            await cluster.wait_gone(run.namespace, name_of(old))

    async def cancel(self, task: Task) -> None:
        """Delete the Job (foreground: its pod goes too); ``run`` then raises TaskCancelled."""
        run = self._runs.mark_cancelled(task)
        if run is None:
            return
        self._stopping[task.id] = run
        while len(self._stopping) > STOPPED_MEMORY:
            self._stopping.popitem(last=False)
        # Interrupt run() first (a watch, a create in flight, waiting out an old attempt), then
        # delete: a create that completed is deleted, one abandoned never made a Job.
        if run.work is not None:
            run.work.cancel()
        try:
            cluster = await self._connected()
            await cluster.delete_job(run.namespace, run.name)
            self._log.info(
                "kubernetes.job_deleted", task_id=str(task.id), job=run.name, namespace=run.namespace
            )
        except KubernetesUnavailable as exc:
            self._log.error(
                "kubernetes.cancel_failed",
                task_id=str(task.id),
                job=run.name,
                error=str(exc),
                note="the Job runs until its deadline unless a later attempt or a peer's sweep deletes it",
            )

    async def wait_stopped(self, task: Task) -> None:
        """Return once the cancelled run's Job (and so its pod) no longer exists."""
        run = self._stopping.pop(task.id, None)
        if run is None or self._cluster is None:
            return
        try:
            await self._cluster.wait_gone(run.namespace, run.name)
        except KubernetesUnavailable as exc:
            # The next attempt of the same number adopts the Job rather than running beside it.
            self._log.warning(
                "kubernetes.stop_unconfirmed", task_id=str(task.id), job=run.name, error=str(exc)
            )


def _scheduler_labels(scheduler: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGED_BY_VALUE, SCHEDULER: label_value(scheduler)}
