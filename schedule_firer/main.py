"""Start the schedule firer process."""

from __future__ import annotations

import asyncio

from schedule_firer.firer import ScheduleFirer
from taskbroker.backends import Backends
from taskbroker.schedule_store import ScheduleStore
from taskbroker.settings import Settings


async def serve_firer(settings: Settings, backends: Backends, stop: asyncio.Event) -> None:
    schedules = ScheduleStore(backends.store.redis, settings.key_prefix, settings.schedule_history)
    await ScheduleFirer(
        settings=settings, store=backends.store, schedules=schedules, broker=backends.broker
    ).run(stop)
