"""Turning a claimed schedule run into a task, through `schedule_tasks` like every other task.

A run is claimed first (taskbroker/lua/schedule_fire.lua), with its task id chosen and written in
a firing record; the task is then stored and published, and only a confirmed publish removes the
record. So a crash or an outage between claim and creation leaves the record, and `recover`
finishes the job later with the same task id: the run is made once, never lost, never doubled.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog

from taskbroker.errors import ScheduleNotFound, TaskExists, TaskNotFound, UnknownScheduler
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.schedule_models import ScheduleRecord
from taskbroker.schedule_store import FiringRecord, ScheduleStore
from taskbroker.scheduling import TaskRequest, schedule_tasks
from taskbroker.settings import Settings
from taskbroker.store import TaskStore

log = structlog.get_logger("taskbroker.schedules")


def new_run(schedule: ScheduleRecord, now: datetime, settings: Settings) -> FiringRecord:
    """The task one run of ``schedule`` creates, with a fresh id; its timeout counts from ``now``.
    Tasks are owned by the schedule's creator, so the owner rules of tasks still hold."""
    spec = schedule.spec
    return FiringRecord(
        task_id=uuid.uuid4(),
        schedule_id=str(schedule.id),
        scheduler=spec.scheduler,
        attributes=spec.attributes,
        timeout=now + (spec.timeout_after or settings.default_timeout),
        owner=schedule.owner,
        retry=spec.retry,
        attempt_timeout=spec.attempt_timeout,
    )


async def create_run(
    record: FiringRecord,
    *,
    store: TaskStore,
    schedules: ScheduleStore,
    broker: QueueBroker,
    settings: Settings,
) -> Task:
    """Create the run's task and drop its firing record. Raises what `schedule_tasks` raises; on
    an outage the record stays for `recover`. A deleted scheduler pauses the schedule instead."""
    request = TaskRequest(
        record.scheduler,
        record.attributes,
        record.timeout,
        record.owner,
        task_id=record.task_id,
        retry=record.retry,
        attempt_timeout=record.attempt_timeout,
    )
    try:
        (task,) = await schedule_tasks([request], store=store, broker=broker, settings=settings)
    except UnknownScheduler as exc:
        await schedules.settle(record.task_id)
        await _pause(schedules, record.schedule_id, str(exc))
        raise
    except TaskExists:
        # Another firer took this run over and stored it; it publishes the message.
        log.info(
            "schedule.run_created_elsewhere", schedule_id=record.schedule_id, task_id=str(record.task_id)
        )
        return await store.get(record.task_id)
    await schedules.settle(record.task_id)
    log.info(
        "schedule.run_created",
        schedule_id=record.schedule_id,
        task_id=str(record.task_id),
        scheduler=record.scheduler,
    )
    return task


async def recover(
    record: FiringRecord,
    *,
    store: TaskStore,
    schedules: ScheduleStore,
    broker: QueueBroker,
    settings: Settings,
) -> None:
    """Finish a run whose firer stopped half-way: create the task if it is not stored, publish
    its message again if it is stored but still pending (a duplicate message is dropped by the
    consumer's claim), and drop the firing record."""
    try:
        task = await store.get(record.task_id)
    except TaskNotFound:
        await create_run(record, store=store, schedules=schedules, broker=broker, settings=settings)
        return
    if task.state is TaskState.PENDING:
        await broker.publish(queue_name(settings.key_prefix, task.scheduler), [str(task.id).encode()])
    await schedules.settle(record.task_id)
    log.info(
        "schedule.run_recovered",
        schedule_id=record.schedule_id,
        task_id=str(record.task_id),
        scheduler=record.scheduler,
        state=task.state.value,
    )


async def _pause(schedules: ScheduleStore, schedule_id: str, error: str) -> None:
    """A schedule whose scheduler was deleted pauses itself and says why, rather than failing on
    every fire time."""
    try:
        current = await schedules.get(schedule_id)
    except ScheduleNotFound:
        return
    spec = current.spec.model_copy(update={"enabled": False})
    await schedules.save(current.id, spec, now=utcnow(), next_run_at=None, last_error=error)
    log.warning("schedule.paused", schedule_id=schedule_id, scheduler=spec.scheduler, error=error)
