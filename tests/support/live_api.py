"""The API served by a real uvicorn on the test's event loop, on a free port: what streaming
responses need (httpx's ASGI transport buffers a whole response, so it cannot test SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from taskbroker.api.app import create_app
from taskbroker.api.event_hub import EventHub
from taskbroker.api.http_limits import HttpLimits
from taskbroker.api.server import DrainingServer, draining_server
from taskbroker.api.stream_slots import StreamSlots
from taskbroker.backends import Backends
from taskbroker.settings import Settings
from tests.support.waiting import eventually


@asynccontextmanager
async def live_api(settings: Settings, backends: Backends) -> AsyncIterator[LiveApi]:
    """Yields the running server; stops it (ending open event streams) at the end of the block."""
    app = create_app(settings, backends, owns_backends=False)
    server = draining_server(app, host="127.0.0.1", port=0, limits=HttpLimits.of(settings))
    async with serving(server):
        yield LiveApi(server, app.state.event_hub, app.state.stream_slots)


@asynccontextmanager
async def serving(server: DrainingServer) -> AsyncIterator[None]:
    """Runs ``server`` on this event loop while the block runs; stops it (as SIGTERM would) after."""
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await eventually(started, what="the server to listen")
    try:
        yield
    finally:
        server.handle_exit(0, None)
        await task


class LiveApi:
    def __init__(self, server: DrainingServer, hub: EventHub, streams: StreamSlots) -> None:
        self.server = server
        self.hub = hub
        self.streams = streams
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
