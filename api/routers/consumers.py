"""The inventory of live consumers, from the records their heartbeats keep in Redis."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from taskbroker.api.auth import Monitoring, require_scheduler
from taskbroker.api.dependencies import StoreDep
from taskbroker.api.schemas import AUTH_ERRORS, ErrorBody
from taskbroker.models import ConsumerStatus
from taskbroker.names import SCHEDULER_NAME_PATTERN

router = APIRouter(tags=["consumers"])

ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    503: {"model": ErrorBody, "description": "Redis unreachable: retry later"},
}


class ConsumerList(BaseModel):
    """The answer of `GET /consumers` (an object, so fields can be added beside the list)."""

    consumers: list[ConsumerStatus]


@router.get("/consumers", responses=ERRORS)
async def list_consumers(
    principal: Monitoring,
    store: StoreDep,
    scheduler: Annotated[
        str | None, Query(pattern=SCHEDULER_NAME_PATTERN, description="Only this scheduler's consumers.")
    ] = None,
) -> ConsumerList:
    """Every live consumer, sorted by scheduler then id (admin; a worker token sees the consumers
    of its schedulers). A consumer that stops cleanly leaves at once; one that dies drops out
    within one lease (TASKBROKER_LEASE), when its last heartbeat's record expires."""
    if scheduler is not None:
        require_scheduler(principal, scheduler)
    found = await store.list_consumers(scheduler=scheduler)
    return ConsumerList(consumers=[c for c in found if principal.may_use(c.scheduler)])
