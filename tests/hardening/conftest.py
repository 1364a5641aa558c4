"""One real deployment for the hardening pass: a `taskbroker api`, a consumer and a timeout daemon
as processes on the real servers, under a key prefix of their own, with an admin token and a
client token scoped to the deployment's scheduler. Shared by the package's tests (starting
processes per test would cost more than the tests), and torn down with its keys and queues.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from taskbroker.settings import Settings
from tests.conftest import ADMIN_HEADERS, AMQP_URL, REDIS_URL, cleanup
from tests.support.processes import ManagedProcess, Processes, process_env
from tests.support.recorder import Recording

SCHEDULER = "hardening"
REPUBLISH_AFTER = 2.0
"""Short, so that reconciliation of lost messages is seen within the test."""
WORKER_CONCURRENCY = 4


@dataclass
class Deployment:
    url: str
    settings: Settings
    processes: Processes
    worker: ManagedProcess
    daemon: ManagedProcess
    client_token: str
    recording: Recording

    @property
    def client_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client_token}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return dict(ADMIN_HEADERS)


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    settings = Settings(redis_url=REDIS_URL, amqp_url=AMQP_URL, key_prefix="tbhard-" + os.urandom(6).hex())
    env = process_env(
        key_prefix=settings.key_prefix,
        redis_url=REDIS_URL,
        amqp_url=AMQP_URL,
        extra={
            "TASKBROKER_REPUBLISH_AFTER": str(REPUBLISH_AFTER),
            # Short, so that held connections are seen closed within the test.
            "TASKBROKER_HTTP_HEADER_TIMEOUT": "2",
            "TASKBROKER_HTTP_BODY_TIMEOUT": "2",
        },
    )
    processes = Processes(Path(tmp_path_factory.mktemp("hardening")), env)
    try:
        _, url = processes.api()
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as http:
            assert http.post("/scheduler", json={"name": SCHEDULER}).status_code == 201
            created = http.post("/token", json={"role": "client", "schedulers": [SCHEDULER]})
            assert created.status_code == 201, created.text
        worker = processes.worker("worker", SCHEDULER, concurrency=WORKER_CONCURRENCY)
        daemon = processes.timeout_daemon()
        recording = Recording(REDIS_URL, settings.key_prefix)
        yield Deployment(url, settings, processes, worker, daemon, created.json()["token"], recording)
        recording.close()
    finally:
        processes.kill_all()
        asyncio.run(cleanup(settings))
