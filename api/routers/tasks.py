"""Tasks: schedule, read, list, abort."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import structlog
from fastapi import APIRouter, Query, status

from api.dependencies import BrokerDep, SettingsDep, StoreDep
from api.schemas import BatchScheduleRequest, ErrorBody, ScheduleRequest, TaskList, TaskPageResponse
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.names import SCHEDULER_NAME_PATTERN
from taskbroker.scheduling import TaskRequest, schedule_tasks

log = structlog.get_logger("taskbroker.api")

router = APIRouter(tags=["tasks"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown scheduler or task"},
    409: {"model": ErrorBody, "description": "The task is already finished"},
    503: {
        "model": ErrorBody,
        "description": "Redis or RabbitMQ unreachable: nothing was stored, retry later",
    },
}


def _request(body: ScheduleRequest) -> TaskRequest:
    return TaskRequest(body.scheduler, body.attributes, body.timeout)


@router.post("/task/schedule", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def schedule_task(
    body: ScheduleRequest, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> Task:
    """Create a task; answered once it is stored in Redis and its message confirmed by RabbitMQ."""
    (task,) = await schedule_tasks([_request(body)], store=store, broker=broker, settings=settings)
    return task


@router.post("/task/schedule/batch", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def schedule_batch(
    body: BatchScheduleRequest, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> TaskList:
    """Create up to 1,000 tasks at once, all or none; answered once every message is confirmed."""
    tasks = await schedule_tasks(
        [_request(t) for t in body.tasks], store=store, broker=broker, settings=settings
    )
    return TaskList(tasks=tasks)


@router.get("/task/{task_id}", responses=ERRORS)
async def get_task(task_id: UUID, store: StoreDep) -> Task:
    """A live task, or a finished one within the retention time."""
    return await store.get(task_id)


@router.get("/tasks", responses=ERRORS)
async def list_tasks(
    store: StoreDep,
    scheduler: Annotated[str | None, Query(pattern=SCHEDULER_NAME_PATTERN)] = None,
    state: Annotated[
        Literal["pending", "running"] | None, Query(description="Only live tasks are listed")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}(:[0-9]{1,9})?$")] = None,
) -> TaskPageResponse:
    """A page of live tasks. Pages may be short; follow ``next_cursor`` until it is null."""
    page = await store.list_live(
        scheduler=scheduler, state=TaskState(state) if state else None, limit=limit, cursor=cursor
    )
    return TaskPageResponse(tasks=page.tasks, next_cursor=page.next_cursor)


@router.post("/task/{task_id}/abort", responses=ERRORS)
async def abort_task(task_id: UUID, store: StoreDep) -> Task:
    """Abort a live task: a pending one never runs, a running one is cancelled by its consumer."""
    task = await store.abort(task_id, now=utcnow())
    await store.notify_cancel([str(task_id)])
    log.info("task.aborted", task_id=str(task_id), scheduler=task.scheduler, attempt=task.attempts)
    return task
