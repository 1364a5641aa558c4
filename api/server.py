"""The uvicorn server our processes run: SIGTERM and SIGINT drain in-flight requests and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Generator, Sequence
from types import FrameType

import uvicorn
from fastapi import FastAPI

from taskbroker.api.http_limits import (
    BoundedHttpToolsProtocol,
    HttpLimits,
    LimitedConfig,
    require_uvicorn_protocol,
)


class DrainingServer(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after shutting down, so the process dies with -15
    instead of exiting 0; supervisors (systemd, Kubernetes, compose) read that as a crash. This
    server only asks uvicorn to shut down gracefully and lets the caller exit normally.

    ``on_exit`` hooks run as the shutdown begins: open event streams must end then, or the drain
    would wait for listeners that never leave."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Sequence[Callable[[], None]] = ()) -> None:
        super().__init__(config)
        self.on_exit = list(on_exit)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for hook in self.on_exit:
            # A signal handler interrupts the loop anywhere: let the loop run the hook.
            loop.call_soon_threadsafe(hook) if loop is not None else hook()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self.handle_exit) for signum in handled}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def draining_server(
    app: FastAPI, *, host: str, port: int, limits: HttpLimits | None = None
) -> DrainingServer:
    """Our logging is structlog's, so uvicorn's own log config and access log stay off. HTTP is
    parsed by httptools within ``limits`` (the defaults: HttpLimits())."""
    require_uvicorn_protocol()
    config = LimitedConfig(
        app,
        limits=limits or HttpLimits(),
        host=host,
        port=port,
        http=BoundedHttpToolsProtocol,
        log_config=None,
        access_log=False,
    )
    hub = getattr(app.state, "event_hub", None)  # an app without event streams has none
    return DrainingServer(config, on_exit=[hub.stop] if hub is not None else [])
