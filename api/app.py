"""The one place that wires the HTTP application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from taskbroker.api.dashboard import pages as dashboard_pages
from taskbroker.api.dependencies import SchedulingContext
from taskbroker.api.errors import install_error_handlers
from taskbroker.api.event_hub import EventHub
from taskbroker.api.finished_tally import FinishedTally
from taskbroker.api.instrumentation import RequestMetrics
from taskbroker.api.limits import BodySizeLimit
from taskbroker.api.routers import (
    consumers,
    events,
    health,
    overview,
    reruns,
    schedulers,
    schedules,
    tasks,
    tokens,
    whoami,
)
from taskbroker.api.routers import metrics as metrics_router
from taskbroker.api.routers.docs import docs_router
from taskbroker.api.scheduling_lane import LanedFastAPI
from taskbroker.api.stream_slots import StreamSlots
from taskbroker.backends import Backends
from taskbroker.errors import BrokerUnavailable
from taskbroker.metrics.live import LiveState
from taskbroker.settings import Settings
from taskbroker.startup_heap import freeze_startup_heap

log = structlog.get_logger("taskbroker.api")


def create_app(
    settings: Settings, backends: Backends, *, owns_backends: bool = True, lanes: bool = True
) -> FastAPI:
    """Build the API over the given backends (every store the routes use comes from them: see
    api.dependencies); with ``owns_backends`` it closes them at shutdown.
    ``lanes=False`` serves the scheduling requests through the whole middleware stack too (the
    tests compare both: api.scheduling_lane)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await backends.broker.connect()
        except BrokerUnavailable as exc:
            # Serve anyway: /ready reports it and each request reconnects.
            log.warning("api.rabbitmq_unavailable_at_start", error=str(exc))
        freeze_startup_heap()
        yield
        await app.state.event_hub.close()
        await app.state.stream_slots.close()
        if owns_backends:
            await backends.close()

    app = LanedFastAPI(
        title="taskbroker",
        summary="Schedule tasks onto named queues; consumers run them through pluggable runtimes.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by api.routers.docs instead, as TASKBROKER_API_DOCS says (a token by default).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.backends = backends
    app.state.scheduling_context = SchedulingContext(
        backends.store, backends.broker, backends.rate_windows, settings
    )
    app.state.tokens = backends.tokens
    app.state.event_hub = EventHub(backends.events)
    app.state.stream_slots = StreamSlots(app.state.tokens, settings)
    app.state.finished_tally = FinishedTally(backends.events)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_laned_router(tasks.scheduling_router, lanes=lanes, max_body_bytes=settings.max_body_bytes)
    for router in (
        tasks.router,
        reruns.router,
        schedulers.router,
        consumers.router,
        schedules.router,
        tokens.router,
        whoami.router,
        overview.router,
        health.router,
        dashboard_pages.router,
    ):
        app.include_router(router)
    app.include_router(events.router)
    if (docs := docs_router(app, settings.api_docs)) is not None:
        app.include_router(docs)
    # Metrics: request latency of every response (added last: outermost, so refusals such as 413 count too).
    app.state.live_state = LiveState(backends.store, backends.broker)
    app.add_middleware(RequestMetrics)
    app.include_router(metrics_router.router)
    return app
