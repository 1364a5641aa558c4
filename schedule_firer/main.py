"""Start the schedule firer process. `taskbroker schedule-firer` and `taskbroker dev` both start
it here."""

from __future__ import annotations

import asyncio

from taskbroker.backends import Backends
from taskbroker.schedule_firer.firer import ScheduleFirer
from taskbroker.settings import Settings


async def serve_firer(settings: Settings, backends: Backends, stop: asyncio.Event) -> None:
    """Fire due schedules over ``backends`` until ``stop``."""
    await ScheduleFirer(
        settings=settings, store=backends.store, schedules=backends.schedules, broker=backends.broker
    ).run(stop)
