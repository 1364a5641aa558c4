"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from taskbroker.api.auth import AnyCaller
from taskbroker.api.dependencies import BrokerDep, StoreDep
from taskbroker.api.schemas import AUTH_ERRORS, ErrorBody, ReadyStatus
from taskbroker.errors import TaskbrokerError
from taskbroker.queue.base import QueueBroker
from taskbroker.store import TaskStore

router = APIRouter(tags=["health"])


@router.get("/health")
@router.get("/healthz")
async def health() -> dict[str, str]:
    """The process is alive (it says nothing about Redis or RabbitMQ: see /ready). ``/healthz``
    is the path every taskbroker process answers, for liveness probes."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyStatus, responses={**AUTH_ERRORS, 503: {"model": ErrorBody}})
async def ready(principal: AnyCaller, store: StoreDep, broker: BrokerDep) -> JSONResponse:
    """Redis and RabbitMQ both answer: this instance can accept tasks."""
    return await _readiness(store, broker)


@router.get("/readyz", response_model=ReadyStatus, responses={503: {"model": ErrorBody}})
async def readyz(store: StoreDep, broker: BrokerDep) -> JSONResponse:
    """/ready without a token, for readiness probes (a Kubernetes probe sends no secret header);
    the path every taskbroker process answers, on its metrics port for the others."""
    return await _readiness(store, broker)


async def _readiness(store: TaskStore, broker: QueueBroker) -> JSONResponse:
    problems: dict[str, str] = {}
    for name, check in (("redis", store.ping), ("rabbitmq", broker.ping)):
        try:
            await check()
        except TaskbrokerError as exc:
            problems[name] = str(exc)
    if problems:
        return JSONResponse({"detail": problems}, status_code=503, headers={"Retry-After": "2"})
    return JSONResponse({"redis": "ok", "rabbitmq": "ok"})
