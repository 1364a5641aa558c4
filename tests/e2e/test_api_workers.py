"""`taskbroker api --workers N`: N API processes on one port, stopped together."""

from __future__ import annotations

import os
import signal
import socket

import httpx
import pytest

from tests.conftest import ADMIN_HEADERS
from tests.support.blocking_api import BlockingApi
from tests.support.processes import Processes
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "api-workers"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_api_processes_serve_one_port_and_sigterm_stops_both_cleanly(
    processes: Processes, http: httpx.Client
) -> None:
    api, url = processes.api(workers=2)
    pids = api.wait_for_event("api.processes_started")["pids"]
    assert len(set(pids)) == 2
    eventually_sync(lambda: len(api.events("process.starting")) == 3, what="both API processes to start")
    BlockingApi(http, url).register(SCHEDULER)

    scheduled = []
    for _ in range(20):  # a connection each: the kernel hands each to either process
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as client:
            response = client.post(
                "/task/schedule",
                json={"scheduler": SCHEDULER, "attributes": {"function": "taskbroker.runtimes.builtin:noop"}},
            )
        assert response.status_code == 201, response.text
        scheduled.append(response.json()["id"])
    assert len(set(scheduled)) == 20
    assert all(BlockingApi(http, url).task(task_id)["state"] == "pending" for task_id in scheduled)

    api.send(signal.SIGTERM)

    assert api.wait() == 0, api.describe()
    assert api.events("api.processes_stopped")[0]["exitcodes"] == [0, 0]
    assert not [pid for pid in pids if alive(pid)], "an API process outlived the command"


def test_an_api_process_that_dies_stops_the_others_and_the_command_exits_1(processes: Processes) -> None:
    api, _url = processes.api(workers=2)
    pids = api.wait_for_event("api.processes_started")["pids"]

    os.kill(pids[0], signal.SIGKILL)

    assert api.wait() == 1, api.describe()
    assert api.events("api.process_exited")[0]["pid"] == pids[0]
    assert not [pid for pid in pids if alive(pid)], "an API process outlived the command"


def test_api_workers_on_a_port_already_taken_exit_1_saying_so(processes: Processes) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        api = processes.start("api", "api", "--host", "127.0.0.1", "--port", port, "--workers", "2")

        assert api.wait() == 1, api.describe()
    assert f"Cannot listen on 127.0.0.1:{port}" in api.stderr()
