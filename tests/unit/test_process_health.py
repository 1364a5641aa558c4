"""The metrics port's /healthz and /readyz answer from another thread, by a round trip into the
process's event loop: a stuck loop is not live, a failing check is not ready and says why."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from taskbroker.errors import StoreUnavailable
from taskbroker.metrics.endpoint import MetricsEndpoint
from taskbroker.metrics.health import NotReady, ProcessHealth


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as a process's main loop is to the port."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(timeout=10)
    running.close()


@pytest.fixture
def health(loop: asyncio.AbstractEventLoop) -> ProcessHealth:
    probes = ProcessHealth(timeout=0.5)
    probes.attach(loop)
    return probes


@pytest.fixture
def port(health: ProcessHealth) -> Iterator[int]:
    endpoint = MetricsEndpoint.start("127.0.0.1", 0, health)
    yield endpoint.port
    endpoint.close()


def test_a_process_whose_loop_has_not_started_is_neither_live_nor_ready() -> None:
    probes = ProcessHealth(timeout=0.5)

    assert probes.liveness()[0] == 503
    assert probes.readiness()[0] == 503


def test_a_stuck_event_loop_fails_liveness_and_passes_again_once_it_runs(
    health: ProcessHealth, loop: asyncio.AbstractEventLoop, port: int
) -> None:
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    unblock = threading.Event()
    loop.call_soon_threadsafe(unblock.wait)  # blocks the loop, as a synchronous call would

    stuck = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    unblock.set()

    assert stuck.status_code == 503
    assert "event loop" in stuck.json()["detail"]
    assert health.liveness() == (200, {"status": "ok"})


def test_readiness_names_each_check_that_fails_and_what_it_said(health: ProcessHealth, port: int) -> None:
    async def redis() -> str:
        raise StoreUnavailable("Redis is unreachable: ConnectionError")

    async def consumer() -> str:
        raise NotReady("not subscribed")

    async def rabbitmq() -> str:
        return "ok"

    health.add_check("rabbitmq", rabbitmq)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"rabbitmq": "ok"}
    health.add_check("redis", redis)
    health.add_check("consumer", consumer)

    response = httpx.get(f"http://127.0.0.1:{port}/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "detail": {"redis": "Redis is unreachable: ConnectionError", "consumer": "not subscribed"}
    }


def test_a_check_that_hangs_makes_the_process_not_ready(health: ProcessHealth) -> None:
    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    health.add_check("redis", hangs)

    status, body = health.readiness()
    assert status == 503
    assert "did not answer" in body["detail"]["redis"]


def test_the_metrics_stay_on_the_same_port(port: int) -> None:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")

    assert response.status_code == 200
    assert "process_cpu_seconds_total" in response.text or "python_gc" in response.text
