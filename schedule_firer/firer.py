"""The firing loop. Replicas coordinate only through Redis: a due fire time is claimed by a
compare-and-set in one Lua script, so each fire time creates exactly one task however many
firers run, and a firer may die at any point without losing a claimed run (taskbroker.schedule_runs).

Missed fire times (every firer was down): if the oldest missed one is at most
TASKBROKER_SCHEDULE_GRACE old, one run is made for all of them (coalesced); otherwise none, and
the schedule continues from its next fire time after now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from taskbroker.errors import InvalidTrigger, TaskbrokerError
from taskbroker.lifecycle import repeat_until_stopped
from taskbroker.models import utcnow
from taskbroker.queue.base import QueueBroker
from taskbroker.schedule_runs import create_run, new_run, recover
from taskbroker.schedule_store import FireOutcome, ScheduleStore
from taskbroker.settings import Settings
from taskbroker.store import TaskStore
from taskbroker.triggers import following_fire_time

log = structlog.get_logger("taskbroker.schedule_firer")

RETRY_AFTER = timedelta(seconds=60)
"""How old a firing record must be before another firer finishes its run: far longer than a
healthy store-and-publish takes, far shorter than the retention time of a task."""


@dataclass
class TickReport:
    fired: int = 0
    skipped: int = 0
    overlapped: int = 0
    recovered: int = 0
    task_ids: list[str] = field(default_factory=list)


class ScheduleFirer:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TaskStore,
        schedules: ScheduleStore,
        broker: QueueBroker,
        clock: Callable[[], datetime] = utcnow,
        retry_after: timedelta = RETRY_AFTER,
        batch: int = 100,
    ) -> None:
        self._settings = settings
        self._store = store
        self._schedules = schedules
        self._broker = broker
        self._clock = clock
        self._retry_after = retry_after
        self._batch = batch

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Fire every schedule due at ``now`` (default: the clock), then finish stranded runs."""
        now = now or self._clock()
        report = TickReport()
        while True:
            due = await self._schedules.due(now, limit=self._batch)
            before = report.fired + report.skipped + report.overlapped
            for schedule_id in due:
                try:
                    await self._fire(schedule_id, now, report)
                except TaskbrokerError:
                    raise
                except Exception:  # one broken schedule must not stop the others, nor the process
                    log.exception("schedule.fire_error", schedule_id=schedule_id)
            progressed = report.fired + report.skipped + report.overlapped > before
            if len(due) < self._batch or not progressed:
                break
        for record in await self._schedules.retake(
            cutoff=now - self._retry_after, now=now, limit=self._batch
        ):
            try:
                await recover(
                    record,
                    store=self._store,
                    schedules=self._schedules,
                    broker=self._broker,
                    settings=self._settings,
                )
                report.recovered += 1
            except TaskbrokerError as exc:
                log.warning("schedule.recovery_failed", task_id=str(record.task_id), error=str(exc))
        return report

    async def _fire(self, schedule_id: str, now: datetime, report: TickReport) -> None:
        try:
            schedule = await self._schedules.get(schedule_id)
        except TaskbrokerError:
            return
        due_at = schedule.next_run_at
        if due_at is None or due_at > now:
            return
        try:
            following = following_fire_time(schedule.spec.trigger_spec(schedule.anchor), due_at, now)
        except InvalidTrigger as exc:  # e.g. a timezone this host no longer knows
            following = None
            log.error("schedule.trigger_invalid", schedule_id=schedule_id, error=str(exc))
        bound = structlog.contextvars.bound_contextvars(
            schedule_id=schedule_id, scheduler=schedule.spec.scheduler
        )
        with bound:
            if now - due_at > self._settings.schedule_grace:
                outcome = await self._schedules.fire(
                    schedule, mode="skip", following=following, record=None, now=now
                )
                if outcome is FireOutcome.SKIPPED:
                    report.skipped += 1
                    log.warning("schedule.missed", fire_time=due_at.isoformat(), next_run_at=str(following))
                return
            record = new_run(schedule, now, self._settings)
            outcome = await self._schedules.fire(
                schedule, mode="fire", following=following, record=record, now=now
            )
            if outcome is FireOutcome.OVERLAP:
                report.overlapped += 1
                log.info("schedule.overlap_skipped", fire_time=due_at.isoformat())
            if outcome is not FireOutcome.FIRED:
                return
            report.fired += 1
            report.task_ids.append(str(record.task_id))
            log.info("schedule.fired", task_id=str(record.task_id), fire_time=due_at.isoformat())
            try:
                await create_run(
                    record,
                    store=self._store,
                    schedules=self._schedules,
                    broker=self._broker,
                    settings=self._settings,
                )
            except TaskbrokerError as exc:
                log.warning("schedule.run_deferred", task_id=str(record.task_id), error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every TASKBROKER_SCHEDULE_POLL seconds until ``stop``; a tick in progress completes."""
        log.info("schedule_firer.started", interval=self._settings.schedule_poll)
        await repeat_until_stopped(
            self.tick,
            interval=self._settings.schedule_poll,
            stop=stop,
            failed_event="schedule_firer.tick_failed",
        )
        log.info("schedule_firer.stopped")
