"""Start the timeout daemon process: the sweeps and the webhook dispatcher. `taskbroker
timeout-daemon` and `taskbroker dev` both start it here."""

from __future__ import annotations

import asyncio

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from taskbroker.timeout_daemon.webhooks import run_dispatcher_if_configured


async def serve_daemon(settings: Settings, backends: Backends, stop: asyncio.Event) -> None:
    """Sweep and dispatch webhooks over ``backends`` until ``stop``."""
    daemon = TimeoutDaemon(
        settings=settings, store=backends.store, events=backends.events, broker=backends.broker
    )
    await asyncio.gather(daemon.run(stop), run_dispatcher_if_configured(settings, backends.webhooks, stop))
