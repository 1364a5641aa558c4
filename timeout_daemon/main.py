"""Start the timeout daemon process."""

from __future__ import annotations

import asyncio

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from timeout_daemon.daemon import TimeoutDaemon


async def serve_daemon(settings: Settings, backends: Backends, stop: asyncio.Event) -> None:
    await TimeoutDaemon(settings=settings, store=backends.store, broker=backends.broker).run(stop)
