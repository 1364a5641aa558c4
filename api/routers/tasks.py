"""Tasks: schedule, read, list, abort. What a token sees is the rule of api.auth: clients see and
abort only the tasks they scheduled, every token only those of its schedulers."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import structlog
from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from starlette.convertors import Convertor, register_url_convertor

from taskbroker import metrics
from taskbroker.api.auth import AnyCaller, Scheduling, require_scheduler, require_visible
from taskbroker.api.callbacks import check_callback_url
from taskbroker.api.dependencies import SchedulingContext, SchedulingContextDep, StoreDep
from taskbroker.api.direct_route import DirectRoute
from taskbroker.api.idempotency import (
    IdempotencyKeyHeader,
    RefusedBatchKeyHeader,
    check_unique_keys,
    refuse_batch_header_key,
    with_header_key,
)
from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.api.limits import check_start_time, check_task_input, enforce_rate_limit
from taskbroker.api.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    BatchScheduleRequest,
    ErrorBody,
    ScheduleRequest,
    TaskList,
    TaskPageResponse,
)
from taskbroker.errors import InvalidCursor
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.names import SCHEDULER_NAME_PATTERN
from taskbroker.scheduling import TaskRequest, schedule
from taskbroker.token_models import Role
from taskbroker.tokens import Principal

log = structlog.get_logger("taskbroker.api")

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)


class _TaskIdConvertor(Convertor[str]):
    """A task id in a path is any segment but ``schedule``: GET /task/schedule is then the
    POST-only scheduling path (405), not a task id that is no UUID (422). The endpoint's UUID
    annotation still validates it."""

    regex = "(?!schedule$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


TASK_ID = "task_id"
register_url_convertor(TASK_ID, _TaskIdConvertor())
scheduling_router = APIRouter(tags=["tasks"], route_class=DirectRoute)
"""The hot endpoints: their common request skips FastAPI's general machinery (api.direct_route)."""

ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "Unknown scheduler or task"},
    409: {
        "model": ErrorBody,
        "description": "The task is already finished; or its idempotency key's holder is not "
        "confirmed yet (retry after Retry-After)",
    },
    503: {
        "model": ErrorBody,
        "description": "Redis or RabbitMQ unreachable: nothing was stored, retry later",
    },
}
SCHEDULE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **BODY_ERRORS,
    429: {"model": ErrorBody, "description": "This token's scheduling rate limit is used up"},
}


async def _accept(
    bodies: list[ScheduleRequest], principal: Principal, context: SchedulingContext
) -> list[TaskRequest]:
    """Permissions and limits for each task, then the rate limit for the whole request."""
    settings = context.settings
    starts = []
    for body in bodies:
        require_scheduler(principal, body.scheduler)
        check_task_input(body.attributes, body.timeout, settings)
        if body.callback_url is not None:
            check_callback_url(body.callback_url, settings)
        start = body.start_after(utcnow()) if body.delay is not None or body.not_before is not None else None
        check_start_time(start, body.timeout, settings)
        starts.append(start)
    check_unique_keys(bodies)
    await enforce_rate_limit(context.rate_windows, settings, principal.token_id, len(bodies))
    return [
        TaskRequest(
            b.scheduler,
            b.attributes,
            b.timeout,
            owner=principal.token_id,
            priority=b.priority,
            key=b.key or "",
            callback_url=b.callback_url or "",
            not_before=start,
            retry=b.retry,
            attempt_timeout=b.attempt_timeout,
        )
        for b, start in zip(bodies, starts, strict=True)
    ]


@scheduling_router.post(
    "/task/schedule",
    status_code=status.HTTP_201_CREATED,
    response_model=Task,
    responses={
        200: {"model": Task, "description": "The live task holding this idempotency key"},
        **SCHEDULE_ERRORS,
    },
)
async def schedule_task(
    body: ScheduleRequest,
    principal: Scheduling,
    context: SchedulingContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Create a task; answered once it is stored in Redis and its message confirmed by RabbitMQ.
    With an idempotency key held by a live task of the scheduler: that task, 200."""
    body = with_header_key(body, idempotency_key)
    requests = await _accept([body], principal, context)
    (scheduled,) = await schedule(
        requests, store=context.store, broker=context.broker, settings=context.settings
    )
    return _json(
        scheduled.task.model_dump_json(), created=scheduled.created, location=f"/task/{scheduled.task.id}"
    )


@scheduling_router.post(
    "/task/schedule/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskList,
    responses={200: {"model": TaskList, "description": "Every task was found by its key"}, **SCHEDULE_ERRORS},
)
async def schedule_batch(
    body: BatchScheduleRequest,
    principal: Scheduling,
    context: SchedulingContextDep,
    idempotency_key: RefusedBatchKeyHeader = None,
) -> Response:
    """Create up to 1,000 tasks at once, all or none; answered once every message is confirmed.
    Idempotency keys go per task (``key``); a task whose key a live task holds is that task."""
    refuse_batch_header_key(idempotency_key)
    requests = await _accept(body.tasks, principal, context)
    scheduled = await schedule(
        requests, store=context.store, broker=context.broker, settings=context.settings
    )
    tasks = TaskList(tasks=[s.task for s in scheduled])
    return _json(tasks.model_dump_json(), created=any(s.created for s in scheduled))


def _json(body: str, *, created: bool, location: str | None = None) -> Response:
    """The answer of a scheduling endpoint, serialised once: the models it is built from are
    valid already, and FastAPI's response_model would validate them again. The route still
    documents the model. ``location`` names the one task's URL (clients and schemathesis's
    stateful phase follow it)."""
    return Response(
        body,
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        media_type="application/json",
        headers={"Location": location} if location else None,
    )


@router.get(f"/task/{{task_id:{TASK_ID}}}", responses=ERRORS)
async def get_task(task_id: UUID, principal: AnyCaller, store: StoreDep) -> Task:
    """A live task, or a finished one within the retention time."""
    return require_visible(principal, await store.get(task_id))


@router.get("/tasks", responses=ERRORS)
async def list_tasks(
    principal: AnyCaller,
    store: StoreDep,
    scheduler: Annotated[str | None, Query(pattern=SCHEDULER_NAME_PATTERN)] = None,
    state: Annotated[
        Literal["pending", "running", "delayed", "complete", "failed", "timeout", "aborted"] | None,
        Query(
            description="Without it, or with a live state: live tasks. With a final state: the "
            "retained tasks that ended so, newest first."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}(:[0-9]{1,9})?$")] = None,
) -> TaskPageResponse:
    """A page of the tasks the caller may see (a client's own only): live ones, or with a final
    ``state`` the retained ones that ended so. Pages may be short; follow ``next_cursor`` until
    it is null (a cursor belongs to the listing it came from)."""
    if scheduler is not None:
        require_scheduler(principal, scheduler)
    wanted = TaskState(state) if state else None
    try:
        if wanted is not None and wanted.is_final:
            schedulers = (
                [scheduler]
                if scheduler is not None
                else [d.name for d in await store.list_schedulers() if principal.may_use(d.name)]
            )
            page = await store.list_final(schedulers=schedulers, states=[wanted], limit=limit, cursor=cursor)
        else:
            page = await store.list_live(scheduler=scheduler, state=wanted, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise RequestValidationError(
            [{"loc": ("query", "cursor"), "msg": str(exc), "type": "value_error"}]
        ) from exc
    tasks = [t for t in page.tasks if principal.sees(t.scheduler, t.owner)]
    return TaskPageResponse(tasks=tasks, next_cursor=page.next_cursor)


@router.post("/task/{task_id}/abort", responses=ERRORS)
async def abort_task(task_id: UUID, principal: Scheduling, store: StoreDep) -> Task:
    """Abort a live task: a delayed or pending one never runs, a running one is cancelled by its
    consumer."""
    require_visible(principal, await store.get(task_id))
    task = await store.abort(task_id, now=utcnow())
    await store.notify_cancel([str(task_id)])
    log.info(
        "task.aborted",
        task_id=str(task_id),
        scheduler=task.scheduler,
        attempt=task.attempts,
        by=principal.token_id,
    )
    metrics.task_finished(task.scheduler, TaskState.ABORTED)
    return task


@router.get("/tasks/by-key", responses=ERRORS)
async def find_task_by_key(
    principal: AnyCaller,
    store: StoreDep,
    scheduler: Annotated[str, Query(pattern=SCHEDULER_NAME_PATTERN)],
    key: Annotated[str, Query(min_length=1, max_length=255)],
    owner: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9a-f]{12}$|^admin$",
            description="The token id that scheduled it (default: the caller's own); a client's "
            "own, whatever it names",
        ),
    ] = None,
) -> Task:
    """The live task of ``scheduler`` scheduled with idempotency key ``key`` (keys are per token,
    so by ``owner``); 404 when no live task holds it."""
    require_scheduler(principal, scheduler)
    if principal.role is Role.CLIENT or owner is None:
        owner = principal.token_id  # a client's lookups never touch another client's keys
    holder = await store.holder_of_key(scheduler, owner, key)
    if holder is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live task of {scheduler!r} holds that key")
    return require_visible(principal, await store.get(holder))
