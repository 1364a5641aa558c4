"""Every long-running process answers /healthz and /readyz (Kubernetes probes): the worker,
timeout daemon and schedule firer on their metrics port, the API on its own. Readiness turns
503, saying what is missing, while Redis is unreachable, and back once it answers; liveness
stays 200 throughout (the process is fine: restarting it would not bring Redis back)."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest

from tests.conftest import REDIS_URL, proxied_url
from tests.support.blocking_api import BlockingApi
from tests.support.processes import Processes, free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "probed"


def _probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def _missing(port: int) -> dict[str, Any] | None:
    """The body of a 503 /readyz; None while the process still says it is ready."""
    status, body = _probe(port, "/readyz")
    return body if status == 503 else None


def _ready(port: int) -> bool:
    return _probe(port, "/readyz")[0] == 200


def test_each_process_is_live_and_ready_and_reports_redis_missing_while_it_is_unreachable(
    processes: Processes, http: httpx.Client, redis_proxy: TcpProxy
) -> None:
    _, url = processes.api()
    BlockingApi(http, url).register(SCHEDULER)
    through_proxy = {"TASKBROKER_REDIS_URL": proxied_url(REDIS_URL, redis_proxy)}
    ports = {"worker": free_port(), "timeout-daemon": free_port(), "schedule-firer": free_port()}
    processes.worker("worker", SCHEDULER, env=through_proxy, metrics_port=ports["worker"])
    daemon = processes.start(
        "timeout-daemon", "timeout-daemon", "--metrics-port", str(ports["timeout-daemon"]), env=through_proxy
    )
    daemon.wait_for_event("timeout_daemon.started")
    firer = processes.start(
        "schedule-firer", "schedule-firer", "--metrics-port", str(ports["schedule-firer"]), env=through_proxy
    )
    firer.wait_for_event("schedule_firer.started")

    for name, port in ports.items():
        assert _probe(port, "/healthz") == (200, {"status": "ok"}), name
        expected = {"redis": "ok", "rabbitmq": "ok"} | (
            {"consumer": "subscribed"} if name == "worker" else {}
        )
        assert _probe(port, "/readyz") == (200, expected), name
    # The API answers the same paths on its own port, with no token (probes send none).
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200

    redis_proxy.cut()
    for name, port in ports.items():
        body = eventually_sync(functools.partial(_missing, port), what=f"{name} to report Redis missing")
        assert body is not None
        assert set(body["detail"]) == {"redis"}, (name, body)
        assert "Redis" in body["detail"]["redis"], (name, body)
        assert _probe(port, "/healthz") == (200, {"status": "ok"}), name

    redis_proxy.restore()
    for name, port in ports.items():
        eventually_sync(functools.partial(_ready, port), what=f"{name} to be ready again")
