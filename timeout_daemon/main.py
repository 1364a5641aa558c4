"""Start the timeout daemon process: the sweeps and the webhook dispatcher."""

from __future__ import annotations

import asyncio

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from timeout_daemon.daemon import TimeoutDaemon
from timeout_daemon.webhooks import run_dispatcher_if_configured


async def serve_daemon(settings: Settings, backends: Backends, stop: asyncio.Event) -> None:
    await asyncio.gather(
        TimeoutDaemon(settings=settings, store=backends.store, broker=backends.broker).run(stop),
        run_dispatcher_if_configured(settings, backends.store, stop),
    )
