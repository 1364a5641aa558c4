"""Prometheus metrics: this API process's counters and latencies, plus the shared state (live
tasks, queue depth, consumers) read from Redis and RabbitMQ at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from taskbroker import metrics
from taskbroker.api.auth import Monitoring, require_every_scheduler
from taskbroker.api.schemas import AUTH_ERRORS
from taskbroker.metrics.live import LiveState, render

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **AUTH_ERRORS,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    },
)
async def prometheus_metrics(principal: Monitoring, request: Request) -> Response:
    """Metrics in the Prometheus text format, for an admin or worker token not limited to
    schedulers (they name every scheduler). Always 200 with what could be read: with Redis or
    RabbitMQ down, their gauges are missing and ``taskbroker_redis_up`` /
    ``taskbroker_rabbitmq_up`` are 0."""
    require_every_scheduler(principal, "metrics")
    live: LiveState = request.app.state.live_state
    reading = await live.read()
    return Response(render(metrics.REGISTRY, reading), media_type=CONTENT_TYPE_LATEST)
