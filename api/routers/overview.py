"""The dashboard's overview as one cheap read: per scheduler, what waits, runs and finished.

Everything comes from indexes that already exist, never from a scan of the tasks: the live set's
size and the lease index (O(running)) for waiting and running, the queue's consumer count from
RabbitMQ, and the finished counts from the event stream through the process's FinishedTally.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from taskbroker.api.auth import AnyCaller
from taskbroker.api.dependencies import BrokerDep, SettingsDep, StoreDep
from taskbroker.api.finished_tally import FinishedTally, SchedulerTally
from taskbroker.api.schemas import AUTH_ERRORS, ErrorBody, Overview, SchedulerOverview
from taskbroker.errors import BrokerUnavailable, QueueMissing
from taskbroker.models import utcnow
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker

router = APIRouter(tags=["schedulers"])

IDLE = SchedulerTally(0, 0, 0, 0, [0] * 15)


def finished_tally(request: Request) -> FinishedTally:
    tally: FinishedTally = request.app.state.finished_tally
    return tally


async def _consumers(broker: QueueBroker, queue: str) -> int | None:
    try:
        return (await broker.stats(queue)).consumers
    except (BrokerUnavailable, QueueMissing):
        return None


@router.get(
    "/overview",
    responses={**AUTH_ERRORS, 503: {"model": ErrorBody, "description": "Redis unreachable: retry later"}},
)
async def overview(
    request: Request, principal: AnyCaller, store: StoreDep, broker: BrokerDep, settings: SettingsDep
) -> Overview:
    """Each scheduler the token may use: waiting, delayed, running, consumers, paused; completed
    and failed in the last 5 and 60 minutes; tasks finished per minute over the last 15 (what the
    event stream retains). Counts cover every client's tasks of the scheduler, as `GET /schedulers` does."""
    definitions = [d for d in await store.list_schedulers() if principal.may_use(d.name)]
    census, running, tallies, paused, consumers = await asyncio.gather(
        store.live_census(),
        store.running_per_scheduler(),
        finished_tally(request).read(),
        store.paused_schedulers(),
        asyncio.gather(*(_consumers(broker, queue_name(settings.key_prefix, d.name)) for d in definitions)),
    )
    rows = []
    for definition, attached in zip(definitions, consumers, strict=True):
        live = census.per_scheduler.get(definition.name, 0)
        held = running.get(definition.name, 0)
        delayed = (census.delayed_per_scheduler or {}).get(definition.name, 0)
        tally = tallies.get(definition.name, IDLE)
        rows.append(
            SchedulerOverview(
                name=definition.name,
                runtime=definition.runtime,
                waiting=max(live - held - delayed, 0),
                delayed=delayed,
                running=held,
                paused=definition.name in paused,
                consumers=attached,
                completed_5m=tally.completed_5m,
                failed_5m=tally.failed_5m,
                completed_60m=tally.completed_60m,
                failed_60m=tally.failed_60m,
                throughput=tally.throughput,
            )
        )
    return Overview(schedulers=rows, generated_at=utcnow())
