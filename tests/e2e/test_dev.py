"""`taskbroker dev`: the whole system in one process with no servers, as a newcomer first runs it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.blocking_api import BlockingApi
from tests.support.processes import ManagedProcess, Processes, process_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def serverless(key_prefix: str, tmp_path: Path) -> Iterator[Processes]:
    """Processes whose environment names no Redis or RabbitMQ at all."""
    env = process_env(key_prefix=key_prefix, redis_url=None, amqp_url=None)
    assert not {"TASKBROKER_REDIS_URL", "TASKBROKER_AMQP_URL"} & set(env)
    started = Processes(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()


def _start_dev(processes: Processes) -> tuple[ManagedProcess, str]:
    dev = processes.start("dev", "dev", "--port", "0")
    url = dev.wait_for_stdout(r"serving at (http://127\.0\.0\.1:\d+) on embedded").group(1)
    return dev, url


def test_dev_runs_an_echo_task_on_embedded_servers(serverless: Processes, http: httpx.Client) -> None:
    dev, url = _start_dev(serverless)
    api = BlockingApi(http, url)

    task = api.schedule(
        "default", {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"hello": "world", "n": 3}}
    )
    final = api.wait_for_state(task["id"])

    assert final["state"] == "complete", final
    assert final["result"] == {"hello": "world", "n": 3}
    assert final["attempts"] == 1
    assert [s["name"] for s in http.get(f"{url}/schedulers").json()] == ["default"]
    assert http.get(f"{url}/ready").status_code == 200
    assert f"Dashboard (sign in with the admin token): {url}/ui" in dev.stdout()


def test_dev_drains_its_consumer_and_exits_0_on_sigterm(serverless: Processes, http: httpx.Client) -> None:
    dev, url = _start_dev(serverless)
    api = BlockingApi(http, url)
    task = api.schedule(
        "default", {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 1}}
    )
    api.wait_for_state(task["id"], "running")

    dev.send(signal.SIGTERM)

    assert dev.wait() == 0, dev.describe()
    assert dev.events("consumer.stopped"), f"the built-in consumer was not drained: {dev.describe()}"
    assert [e["task_id"] for e in dev.events("task.complete")] == [task["id"]]


def test_dev_generates_an_admin_token_prints_it_and_requires_it(key_prefix: str, tmp_path: Path) -> None:
    env = process_env(key_prefix=key_prefix, redis_url=None, amqp_url=None)
    env.pop("TASKBROKER_ADMIN_TOKEN")
    processes = Processes(tmp_path, env)
    try:
        dev, url = _start_dev(processes)
        token = dev.wait_for_stdout(r"Admin token \(generated[^:]*: (\S+)").group(1)
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            refused = anonymous.get("/schedulers")
            docs = anonymous.get("/docs")  # the banner's link opens in a browser, without the token
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
            final = BlockingApi(http, url).wait_for_state(
                BlockingApi(http, url).schedule("default", {"function": "taskbroker.runtimes.builtin:noop"})[
                    "id"
                ]
            )
    finally:
        processes.kill_all()

    assert refused.status_code == 401
    assert docs.status_code == 200
    assert final["state"] == "complete"
    assert f"TASKBROKER_TOKEN={token}" in dev.stdout()
