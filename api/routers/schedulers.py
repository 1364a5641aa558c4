"""Schedulers: named queues and the runtime their consumers use."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from taskbroker import metrics
from taskbroker.api.auth import Admin, AnyCaller, require_scheduler
from taskbroker.api.dependencies import BrokerDep, SettingsDep, StoreDep
from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.api.schemas import AUTH_ERRORS, BODY_ERRORS, ErrorBody
from taskbroker.errors import BrokerUnavailable, QueueMissing
from taskbroker.models import SchedulerDefinition, SchedulerStatus, TaskState, utcnow
from taskbroker.names import SCHEDULER_NAME_PATTERN, queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import TaskStore

router = APIRouter(tags=["schedulers"], route_class=JsonBodyRoute)

NamePath = Annotated[str, Path(pattern=SCHEDULER_NAME_PATTERN)]
ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "No such scheduler"},
    409: {"model": ErrorBody, "description": "Conflicting definition, or live tasks remain"},
    503: {"model": ErrorBody, "description": "Redis or RabbitMQ unreachable: retry later"},
}


async def _status(
    definition: SchedulerDefinition,
    store: TaskStore,
    broker: QueueBroker,
    settings: Settings,
    paused: set[str] | None = None,
) -> SchedulerStatus:
    """``paused``: the paused schedulers, when the caller has read them already (a listing)."""
    messages: int | None = None
    consumers: int | None = None
    try:
        stats = await broker.stats(queue_name(settings.key_prefix, definition.name))
        messages, consumers = stats.messages, stats.consumers
    except (BrokerUnavailable, QueueMissing):
        pass
    live = await store.live_count(definition.name)
    if paused is None:
        paused = await store.paused_schedulers()
    return SchedulerStatus(
        **definition.model_dump(),
        messages=messages,
        consumers=consumers,
        live_tasks=live,
        paused=definition.name in paused,
    )


@router.post(
    "/scheduler",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": SchedulerStatus, "description": "Already registered, same definition"},
        **ERRORS,
        **BODY_ERRORS,
    },
)
async def register_scheduler(
    definition: SchedulerDefinition,
    response: Response,
    principal: Admin,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
) -> SchedulerStatus:
    """Register a scheduler and declare its durable queue. Idempotent for the same definition;
    ``queue_type`` left out is TASKBROKER_QUEUE_TYPE."""
    if "queue_type" not in definition.model_fields_set:
        definition = definition.model_copy(update={"queue_type": settings.queue_type})
    # Queue first: a registered scheduler always has its queue, so scheduling never hits a gap.
    await broker.declare(queue_name(settings.key_prefix, definition.name), definition.queue_type)
    if not await store.register_scheduler(definition):
        response.status_code = status.HTTP_200_OK
    return await _status(definition, store, broker, settings)


@router.get("/schedulers", responses=ERRORS)
async def list_schedulers(
    principal: AnyCaller, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> list[SchedulerStatus]:
    """Every scheduler the token may use, with its queue depth and consumer count (null when
    RabbitMQ is unreachable)."""
    definitions = [d for d in await store.list_schedulers() if principal.may_use(d.name)]
    paused = await store.paused_schedulers()
    return list(await asyncio.gather(*(_status(d, store, broker, settings, paused) for d in definitions)))


@router.get("/scheduler/{name}", responses=ERRORS)
async def get_scheduler(
    name: NamePath, principal: AnyCaller, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> SchedulerStatus:
    require_scheduler(principal, name)
    return await _status(await store.get_scheduler(name), store, broker, settings)


@router.delete("/scheduler/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_scheduler(
    name: NamePath,
    principal: Admin,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
    force: Annotated[bool, Query(description="Abort the scheduler's live tasks instead of refusing")] = False,
) -> None:
    """Remove a scheduler and its queue; refused (409) while it has live tasks unless forced."""
    aborted = await store.delete_scheduler(name, force=force, now=utcnow())
    await store.notify_cancel(aborted)
    metrics.task_finished(name, TaskState.ABORTED, len(aborted))
    await broker.delete(queue_name(settings.key_prefix, name))


@router.post("/scheduler/{name}/pause", responses=ERRORS)
async def pause_scheduler(
    name: NamePath, principal: Admin, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> SchedulerStatus:
    """Stop the scheduler's consumers taking new tasks, within one heartbeat (a third of
    TASKBROKER_LEASE), replicas started later included. Running tasks go on; scheduling still
    accepts tasks, which wait in the queue. Idempotent. How to drain a queue before a deploy."""
    await store.set_paused(name, True)
    return await _status(await store.get_scheduler(name), store, broker, settings)


@router.post("/scheduler/{name}/resume", responses=ERRORS)
async def resume_scheduler(
    name: NamePath, principal: Admin, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> SchedulerStatus:
    """Let a paused scheduler's consumers take tasks again, within one heartbeat. Idempotent."""
    await store.set_paused(name, False)
    return await _status(await store.get_scheduler(name), store, broker, settings)
