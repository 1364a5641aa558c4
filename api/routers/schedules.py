"""Recurring schedules, for admins: create, list, read, change (pause / resume), delete, force a
run, read the run history. The schedule firer process turns them into tasks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from taskbroker.api.auth import Admin
from taskbroker.api.dependencies import BrokerDep, SchedulesDep, SettingsDep, StoreDep
from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.api.limits import check_task_input
from taskbroker.api.schemas import AUTH_ERRORS, BODY_ERRORS, ErrorBody
from taskbroker.errors import InvalidTrigger, ScheduleNotFound
from taskbroker.models import Task, utcnow
from taskbroker.schedule_models import (
    TRIGGER_FIELDS,
    Schedule,
    SchedulePatch,
    ScheduleRecord,
    ScheduleRun,
    ScheduleSpec,
)
from taskbroker.schedule_runs import create_run, new_run
from taskbroker.schedule_store import FireOutcome, ScheduleStore
from taskbroker.settings import Settings
from taskbroker.store import TaskStore
from taskbroker.triggers import validate

log = structlog.get_logger("taskbroker.api")

router = APIRouter(tags=["schedules"], route_class=JsonBodyRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "No such schedule, or its scheduler is not registered"},
    409: {"model": ErrorBody, "description": "Another schedule has that name"},
    503: {"model": ErrorBody, "description": "Redis or RabbitMQ unreachable: retry later"},
}


def _invalid(exc: InvalidTrigger) -> RequestValidationError:
    """A trigger error in FastAPI's own 422 shape, its location naming the argument."""
    return RequestValidationError(
        [{"loc": ("body", *exc.argument.split(".")), "msg": exc.message, "type": "value_error"}]
    )


async def _check(spec: ScheduleSpec, store: TaskStore, settings: Settings) -> None:
    """What a created task would be checked for, before anything is stored."""
    check_task_input(spec.attributes, None, settings)
    if spec.timeout_after is not None and spec.timeout_after > settings.max_timeout:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "timeout_after"),
                    "msg": f"timeout_after is longer than the limit {settings.max_timeout}",
                    "type": "value_error",
                }
            ]
        )
    await store.get_scheduler(spec.scheduler)  # 404 when not registered


def _next_run(spec: ScheduleSpec, anchor: datetime) -> datetime | None:
    """The first fire time from now, for an enabled schedule; None when paused."""
    try:
        fire = validate(spec.trigger_spec(anchor), utcnow())
    except InvalidTrigger as exc:
        raise _invalid(exc) from None
    return fire if spec.enabled else None


async def _view(record: ScheduleRecord, schedules: ScheduleStore) -> Schedule:
    last = str(record.last_task_id) if record.last_task_id else None
    states = await schedules.run_states([last] if last else [])
    return _shown(record, states.get(last) if last else None)


def _shown(record: ScheduleRecord, last_state: str | None) -> Schedule:
    return Schedule(
        **record.spec.model_dump(),
        id=record.id,
        owner=record.owner,
        created_at=record.created_at,
        updated_at=record.updated_at,
        next_run_at=record.next_run_at,
        last_run_at=record.last_run_at,
        last_task_id=record.last_task_id,
        last_state=last_state,
        runs=record.runs,
        last_error=record.last_error,
    )


@router.post("/schedules", status_code=status.HTTP_201_CREATED, responses={**ERRORS, **BODY_ERRORS})
async def create_schedule(
    body: ScheduleSpec, principal: Admin, store: StoreDep, schedules: SchedulesDep, settings: SettingsDep
) -> Schedule:
    """Create a recurring schedule; its tasks are owned by the calling token."""
    now = utcnow()
    next_run = _next_run(body, now)
    await _check(body, store, settings)
    schedule_id = uuid.uuid4()
    await schedules.save(
        schedule_id, body, now=now, create=True, owner=principal.token_id, next_run_at=next_run, anchor=now
    )
    log.info("schedule.created", schedule_id=str(schedule_id), scheduler=body.scheduler, name=body.name)
    return await _view(await schedules.get(schedule_id), schedules)


@router.get("/schedules", responses=ERRORS)
async def list_schedules(principal: Admin, schedules: SchedulesDep) -> list[Schedule]:
    """Every schedule, by name, with its next run and the state of its last run."""
    records = await schedules.all()
    last_ids = [str(r.last_task_id) for r in records if r.last_task_id]
    states = await schedules.run_states(last_ids)
    return [_shown(r, states.get(str(r.last_task_id)) if r.last_task_id else None) for r in records]


@router.get("/schedules/{schedule_id}", responses=ERRORS)
async def get_schedule(schedule_id: UUID, principal: Admin, schedules: SchedulesDep) -> Schedule:
    return await _view(await schedules.get(schedule_id), schedules)


@router.patch("/schedules/{schedule_id}", responses={**ERRORS, **BODY_ERRORS})
async def change_schedule(
    schedule_id: UUID,
    body: SchedulePatch,
    principal: Admin,
    store: StoreDep,
    schedules: SchedulesDep,
    settings: SettingsDep,
) -> Schedule:
    """Change fields; `enabled: false` pauses, `enabled: true` resumes from the next fire time
    after now (missed fire times are not made up). A new trigger counts from now."""
    current = await schedules.get(schedule_id)
    try:
        spec = body.apply(current.spec)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    now = utcnow()
    changed = body.model_fields_set
    retimed = bool(changed & TRIGGER_FIELDS)
    anchor = now if retimed else current.anchor
    resumed = spec.enabled and not current.spec.enabled
    next_run = _next_run(spec, anchor) if retimed or resumed else None
    await _check(spec, store, settings)
    if retimed or resumed or not spec.enabled:
        await schedules.save(
            schedule_id,
            spec,
            now=now,
            next_run_at=next_run,
            anchor=anchor if retimed else None,
            last_error=None if resumed else "keep",
        )
    else:
        await schedules.save(schedule_id, spec, now=now)
    log.info("schedule.changed", schedule_id=str(schedule_id), fields=sorted(changed), enabled=spec.enabled)
    return await _view(await schedules.get(schedule_id), schedules)


@router.delete(
    "/schedules/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
)
async def delete_schedule(schedule_id: UUID, principal: Admin, schedules: SchedulesDep) -> None:
    """Delete a schedule and its history; tasks it created live on."""
    await schedules.delete(schedule_id)
    log.info("schedule.deleted", schedule_id=str(schedule_id))


@router.post("/schedules/{schedule_id}/run", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def force_run(
    schedule_id: UUID,
    principal: Admin,
    store: StoreDep,
    broker: BrokerDep,
    schedules: SchedulesDep,
    settings: SettingsDep,
) -> Task:
    """Create a run now, whatever the trigger says (the overlap guard does not apply); the next
    fire time is unchanged. A 503 after the run was recorded means the schedule firer creates
    the task once Redis and RabbitMQ answer again (the run shows as `creating`)."""
    schedule = await schedules.get(schedule_id)
    now = utcnow()
    record = new_run(schedule, now, settings)
    outcome = await schedules.fire(schedule, mode="force", following=None, record=record, now=now)
    if outcome is not FireOutcome.FIRED:
        raise ScheduleNotFound(f"schedule {schedule_id} does not exist")
    log.info("schedule.forced", schedule_id=str(schedule_id), task_id=str(record.task_id))
    return await create_run(record, store=store, schedules=schedules, broker=broker, settings=settings)


@router.get("/schedules/{schedule_id}/runs", responses=ERRORS)
async def schedule_runs(
    schedule_id: UUID,
    principal: Admin,
    schedules: SchedulesDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[ScheduleRun]:
    """The tasks this schedule created, newest first (at most TASKBROKER_SCHEDULE_HISTORY)."""
    await schedules.get(schedule_id)
    entries = await schedules.runs(schedule_id, limit=limit)
    states = await schedules.run_states([e.task_id for e in entries])
    return [
        ScheduleRun(
            task_id=UUID(e.task_id),
            scheduled_for=e.scheduled_for,
            fired_at=e.fired_at,
            forced=e.forced,
            state=states[e.task_id],
        )
        for e in entries
    ]
