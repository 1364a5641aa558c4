"""`GET /consumers` lists real worker processes from their heartbeats: a SIGKILLed one drops out
within one lease, a SIGTERMed one at once; pausing a scheduler stops every replica taking tasks,
including one started while paused, and resuming starts them all again."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.support.blocking_api import BlockingApi
from tests.support.processes import ManagedProcess, Processes, free_port, taskbroker_command
from tests.support.recorder import Recording
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "inventory"


def _consumers(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/consumers", params={"scheduler": SCHEDULER})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["consumers"]
    return found


def _by_pid(http: httpx.Client, url: str) -> dict[int, dict[str, Any]]:
    return {c["pid"]: c for c in _consumers(http, url)}


def test_consumers_lists_two_workers_with_their_running_tasks_and_drops_a_killed_one_within_a_lease(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    first = processes.worker("first", SCHEDULER, concurrency=1)
    second = processes.worker("second", SCHEDULER, concurrency=1)
    # Long runs (cancellable sleeps), so both still run whatever the lease's wait below takes.
    one = api.schedule(SCHEDULER, recording.call("one", asynchronous=True, seconds=3600))
    two = api.schedule(SCHEDULER, recording.call("two", asynchronous=True, seconds=3600))
    eventually_sync(lambda: recording.starts("one") and recording.starts("two"), what="both tasks to start")

    def both_listed_running() -> dict[int, dict[str, Any]] | None:
        found = _by_pid(http, url)
        running = {str(t) for c in found.values() for t in c["running"]}
        return found if running == {one["id"], two["id"]} and len(found) == 2 else None

    listed = eventually_sync(both_listed_running, what="both workers listed with their running task")
    assert listed is not None
    assert set(listed) == {first.pid, second.pid}
    for consumer in listed.values():
        assert consumer["scheduler"] == SCHEDULER
        assert consumer["runtime"] == "inline"
        assert consumer["concurrency"] == 1
        assert consumer["paused"] is False
        assert len(consumer["running"]) == 1
        assert consumer["version"]
        assert consumer["started_at"] <= consumer["last_heartbeat"]
    assert [c["id"] for c in _consumers(http, url)] == sorted(c["id"] for c in listed.values())

    first.send(signal.SIGKILL)
    first.wait()
    # Its record expires one lease (5 s here) after its last heartbeat: polled, not timed.
    eventually_sync(lambda: set(_by_pid(http, url)) == {second.pid}, what="the killed worker to drop out")

    # The survivor's task is aborted (the killed worker's stays running until a daemon sweeps it).
    survivors_task = str(listed[second.pid]["running"][0])
    assert http.post(f"{url}/task/{survivors_task}/abort").status_code == 200
    eventually_sync(lambda: not _by_pid(http, url)[second.pid]["running"], what="the survivor to run nothing")
    second.send(signal.SIGTERM)
    assert second.wait() == 0
    assert _consumers(http, url) == []  # a clean stop leaves at once, with no wait for its lease


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*taskbroker_command(), *args, "--url", url, "--token", ADMIN_TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    return response.status_code, response.json()


def test_a_paused_scheduler_keeps_new_tasks_queued_on_every_replica_until_resumed(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    ports = [free_port(), free_port()]
    replicas = [processes.worker(f"replica-{i}", SCHEDULER, metrics_port=p) for i, p in enumerate(ports)]
    assert api.scheduler(SCHEDULER)["consumers"] == 2

    paused = _cli(url, "scheduler", "pause", SCHEDULER)
    assert paused.returncode == 0, paused.stderr
    assert '"paused": true' in paused.stdout
    for replica in replicas:
        replica.wait_for_event("consumer.paused")
    # Both replicas cancelled their subscriptions: nothing can take a message from the queue now.
    eventually_sync(lambda: api.scheduler(SCHEDULER)["consumers"] == 0, what="no consumer on the queue")

    tasks = [api.schedule(SCHEDULER, recording.call(f"queued-{i}")) for i in range(4)]
    status = api.scheduler(SCHEDULER)
    assert status["paused"] is True
    assert status["messages"] == 4
    assert [api.task(t["id"])["state"] for t in tasks] == ["pending"] * 4
    for port in ports:
        assert _readyz(port) == (200, {"consumer": "paused", "rabbitmq": "ok", "redis": "ok"})
    listing = _cli(url, "schedulers")
    assert listing.returncode == 0, listing.stderr
    assert "paused" in listing.stdout

    # A replica started while paused reads the mark before it subscribes: it stays idle.
    late_port = free_port()
    late = processes.start(
        "late", "worker", "--scheduler", SCHEDULER, "--allow", "tests.support.recorder",
        "--metrics-port", str(late_port),
    )  # fmt: skip
    late.wait_for_event("consumer.paused")
    assert not late.events("consumer.subscribed")
    eventually_sync(lambda: _readyz(late_port)[0] == 200, what="the late replica to be ready (paused)")
    assert _readyz(late_port)[1]["consumer"] == "paused"
    assert api.scheduler(SCHEDULER)["consumers"] == 0
    assert api.scheduler(SCHEDULER)["messages"] == 4
    assert sum(recording.starts(f"queued-{i}") for i in range(4)) == 0

    resumed = _cli(url, "scheduler", "resume", SCHEDULER)
    assert resumed.returncode == 0, resumed.stderr
    assert '"paused": false' in resumed.stdout
    for task in tasks:
        assert api.wait_for_state(task["id"])["state"] == "complete"
    everyone: list[ManagedProcess] = [*replicas, late]
    for replica in everyone:
        replica.wait_for_event("consumer.resumed")
    eventually_sync(lambda: api.scheduler(SCHEDULER)["consumers"] == 3, what="all three to subscribe again")
    assert api.scheduler(SCHEDULER)["paused"] is False
    assert [recording.starts(f"queued-{i}") for i in range(4)] == [1] * 4
