"""The sweep loop. Any number of replicas may run it: every step is an atomic compare-and-set in
Redis, so two daemons never expire or release the same task twice, and a lapsed lease or an
unclaimed task republished twice costs a duplicate message that claim() drops. Releasing due
delayed tasks (a delay, a retry's backoff) is a step of the sweep too: one script per batch makes
them pending, then their messages are published with confirms."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass

import structlog

from taskbroker import metrics
from taskbroker.errors import BrokerUnavailable, QueueMissing, QueueUnavailable
from taskbroker.events import EventLog
from taskbroker.lifecycle import repeat_until_stopped
from taskbroker.models import TaskState
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.recovery import reconcile, republish
from taskbroker.settings import Settings
from taskbroker.store import Expired, Released, TaskRef, TaskStore

log = structlog.get_logger("taskbroker.timeout_daemon")

# How often a daemon trims every scheduler's index of retained final tasks (GET /tasks?state=):
# write_final trims a busy scheduler's on each write; an idle one's wait for this. Retention is
# days, so a minute late costs nothing, and a sweep a second would repeat the same empty trims.
FINAL_TRIM_INTERVAL = 60.0


@dataclass(frozen=True)
class SweepReport:
    expired: int
    requeued: int
    republished: int = 0
    released: int = 0
    trimmed: int = 0
    """Index entries of final tasks past their retention that this sweep dropped."""


class TimeoutDaemon:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TaskStore,
        events: EventLog,
        broker: QueueBroker,
        batch: int = 1000,
    ) -> None:
        self._settings = settings
        self._store = store
        self._broker = broker
        self._batch = batch
        self._events = events
        self.sweeps = 0
        self._next_final_trim = 0.0  # monotonic; the first sweep trims

    async def sweep(self) -> SweepReport:
        """One pass: expire every due task (in batches), release due delayed ones, republish
        tasks whose lease lapsed, then pending tasks that no consumer claimed in time
        (reconciliation); trim the event stream, and (once a minute) the final-task indexes."""
        started = time.perf_counter()
        expired = await self._expire_due()
        released = await self._release_due()
        requeued = await self._requeue_lapsed()
        republished = await self._reconcile()
        # The stream's time bound (its length bound is kept by every append).
        await self._events.trim(retention=self._settings.events_retention)
        trimmed = 0
        if time.monotonic() >= self._next_final_trim:
            trimmed = await self._store.trim_final_indexes()
            self._next_final_trim = time.monotonic() + FINAL_TRIM_INTERVAL
        self.sweeps += 1
        metrics.sweep_completed(time.perf_counter() - started)
        return SweepReport(
            expired=expired, requeued=requeued, republished=republished, released=released, trimmed=trimmed
        )

    async def _requeue_lapsed(self) -> int:
        """Publish again every running task whose lease lapsed (its consumer died), then mark it
        pending. One scheduler whose queue is missing, or on a RabbitMQ node that is down (a
        classic queue), does not hold up the others: its tasks keep their lapsed leases and are
        tried again on the next sweep."""
        requeued = 0
        skipped: set[str] = set()
        while lapsed := await self._store.lapsed(limit=self._batch):
            by_scheduler: dict[str, list[TaskRef]] = collections.defaultdict(list)
            for ref in lapsed:
                if ref.scheduler not in skipped:
                    by_scheduler[ref.scheduler].append(ref)
            moved = 0
            for scheduler, refs in by_scheduler.items():
                try:
                    count = await republish(self._store, self._broker, refs)
                except (QueueMissing, QueueUnavailable) as exc:
                    skipped.add(scheduler)
                    log.warning("task.requeue_failed", scheduler=scheduler, tasks=len(refs), error=str(exc))
                    continue
                moved += count
                metrics.tasks_requeued(count)
                for ref in refs:
                    log.info("task.lease_lapsed", task_id=ref.id, scheduler=scheduler, action="requeued")
            requeued += moved
            if len(lapsed) < self._batch or moved == 0:
                break
        return requeued

    async def _reconcile(self) -> int:
        """Publish again every pending task not claimed within ``republish_after`` of its last
        publish: its first publish was never confirmed (an API killed mid-request, a reply lost
        in a Redis cut) or its message was lost in RabbitMQ. One scheduler whose queue is missing
        or on a node that is down does not hold up the others: its tasks wait (their timeout
        still ends them)."""
        republished = 0
        skipped: set[str] = set()
        while due := await self._store.unclaimed(limit=self._batch):
            by_scheduler: dict[str, list[TaskRef]] = collections.defaultdict(list)
            for ref in due:
                if ref.scheduler not in skipped:
                    by_scheduler[ref.scheduler].append(ref)
            moved = 0
            for scheduler, refs in by_scheduler.items():
                try:
                    count = await reconcile(self._store, self._broker, refs)
                except (QueueMissing, QueueUnavailable) as exc:
                    skipped.add(scheduler)
                    log.warning("task.republish_failed", scheduler=scheduler, tasks=len(refs), error=str(exc))
                    continue
                moved += count
                metrics.tasks_republished(scheduler, count)
                for ref in refs:
                    log.info("task.republished", task_id=ref.id, scheduler=scheduler)
            republished += moved
            if len(due) < self._batch or moved == 0:
                break
        return republished

    async def _release_due(self) -> int:
        """Make every due delayed task pending and publish it, a batch per script. Three steps
        overlap: while a batch's confirms are awaited the next batch is already published, and
        the one after it is being released in Redis, so Redis, RabbitMQ and this process work at
        once (one batch publishing at a time left RabbitMQ idle while the next was framed). A
        publish that fails leaves its tasks pending in the unclaimed index, made due now:
        reconciliation publishes them on a later sweep, never losing one."""

        def release() -> asyncio.Future[list[Released]]:
            return asyncio.ensure_future(self._store.release_due(limit=self._batch))

        released = 0
        following: asyncio.Future[list[Released]] | None = release()
        publishing: collections.deque[asyncio.Future[None]] = collections.deque()
        try:
            while following is not None:
                batch = await following
                following = release() if len(batch) == self._batch else None
                released += len(batch)
                publishing.append(asyncio.ensure_future(self._publish_released(batch)))
                if len(publishing) == 2:
                    await publishing.popleft()
            while publishing:
                await publishing.popleft()
        except BaseException:
            # Tasks already released are published before giving up, or left to reconciliation.
            if following is not None:
                with contextlib.suppress(Exception):
                    publishing.append(asyncio.ensure_future(self._publish_released(await following)))
            for publish in publishing:
                with contextlib.suppress(Exception):
                    await publish
            raise
        return released

    async def _publish_released(self, batch: list[Released]) -> None:
        by_scheduler: dict[str, list[Released]] = collections.defaultdict(list)
        for item in batch:
            by_scheduler[item.scheduler].append(item)
        for scheduler, items in by_scheduler.items():
            try:
                await self._broker.publish(
                    queue_name(self._settings.key_prefix, scheduler),
                    [item.id.encode() for item in items],
                    [item.priority for item in items],
                )
            except (BrokerUnavailable, QueueMissing) as exc:
                log.warning(
                    "task.release_publish_failed", scheduler=scheduler, tasks=len(items), error=str(exc)
                )
                await self._store.republish_soon([item.id for item in items])
                continue
            metrics.tasks_released(scheduler, len(items))
            # One line per published batch, its ids in it: a backlog of 100,000 due tasks is a
            # hundred lines, not 100,000 (a line per task was a sixth of the release's time); each
            # task's own record of the change is its `pending` event.
            log.info("tasks.released", scheduler=scheduler, count=len(items), task_ids=[i.id for i in items])

    async def _expire_due(self) -> int:
        """Expire every due task, a batch per script. While a batch is logged the next two
        scripts are already queued at Redis (each takes the next due slice: scripts run one at a
        time), so Redis, the slower of the two, never waits for the daemon between batches."""

        def expire() -> asyncio.Future[list[Expired]]:
            return asyncio.ensure_future(self._store.expire_due(limit=self._batch))

        in_flight = collections.deque([expire()])
        expired = 0
        try:
            while in_flight:
                batch = await in_flight.popleft()
                if len(batch) == self._batch:  # more may be due
                    while len(in_flight) < 2:
                        in_flight.append(expire())
                expired += len(batch)
                await self._report_expired(batch)
        except BaseException:
            # Scripts already sent may have expired tasks: log them too before giving up.
            for following in in_flight:
                with contextlib.suppress(Exception):
                    await self._report_expired(await following)
            raise
        return expired

    async def _report_expired(self, batch: list[Expired]) -> None:
        """One ``task.timeout`` line per task, the batch's metrics, and cancel notices."""
        for number, item in enumerate(batch, 1):
            log.info(
                "task.timeout",
                task_id=item.id,
                scheduler=item.scheduler,
                previous_state=item.previous_state,
                attempt=item.attempts,
                consumer=item.consumer,
            )
            if number % 100 == 0:
                await asyncio.sleep(0)  # lets the next batch's script leave for Redis, and its reply in
        # Counted per scheduler and state, not per task: a label lookup costs ~5 us.
        for (scheduler, previous_state), count in collections.Counter(
            (item.scheduler, item.previous_state) for item in batch
        ).items():
            metrics.task_expired(scheduler, previous_state, count)
        await self._store.notify_cancel(
            [item.id for item in batch if item.previous_state is TaskState.RUNNING]
        )

    async def _sweep_and_report(self) -> None:
        report = await self.sweep()
        if report.expired or report.requeued or report.republished or report.released or report.trimmed:
            log.info(
                "timeout_daemon.swept",
                expired=report.expired,
                requeued=report.requeued,
                republished=report.republished,
                released=report.released,
                trimmed=report.trimmed,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``sweep_interval`` until ``stop``; a sweep in progress always completes."""
        log.info("timeout_daemon.started", interval=self._settings.sweep_interval)
        await repeat_until_stopped(
            self._sweep_and_report,
            interval=self._settings.sweep_interval,
            stop=stop,
            failed_event="timeout_daemon.sweep_failed",
            on_failure=metrics.sweep_failed,
        )
        log.info("timeout_daemon.stopped")
