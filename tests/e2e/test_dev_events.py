"""Events in `taskbroker dev` on its embedded servers, and an API process stopping with streams
open: what a newcomer and an operator meet first."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskbroker.client import Client, ClientError, TaskEvent
from taskbroker.models import TaskState
from tests.conftest import ADMIN_TOKEN
from tests.support.processes import ManagedProcess, Processes, process_env
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def serverless(key_prefix: str, tmp_path: Path) -> Iterator[Processes]:
    env = process_env(key_prefix=key_prefix, redis_url=None, amqp_url=None)
    started = Processes(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()


def _start_dev(processes: Processes) -> tuple[ManagedProcess, str]:
    dev = processes.start("dev", "dev", "--port", "0")
    url = dev.wait_for_stdout(r"serving at (http://127\.0\.0\.1:\d+) on embedded").group(1)
    return dev, url


def test_dev_streams_events_and_the_client_waits_on_them(serverless: Processes) -> None:
    _, url = _start_dev(serverless)
    with Client(url, ADMIN_TOKEN) as client:
        task = client.schedule(
            "default", {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
        )
        done = client.wait(task.id, timeout=60)
        history = list(client.task_events(task.id))
    assert done.state is TaskState.COMPLETE
    assert [e.state.value for e in history] == ["pending", "running", "complete"]


def test_an_api_with_open_event_streams_still_exits_0_on_sigterm(processes: Processes) -> None:
    api, url = processes.api()
    received: list[TaskEvent] = []
    with Client(url, ADMIN_TOKEN) as client:
        client.register_scheduler("alpha")
        client.schedule("alpha", {"function": "taskbroker.runtimes.builtin:noop"})

    def listen() -> None:
        # After the API is gone the client gives up reconnecting: ApiUnreachable ends the thread.
        with Client(url, ADMIN_TOKEN) as client, contextlib.suppress(ClientError):
            for event in client.events(after="0-0"):
                received.append(event)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    eventually_sync(lambda: received, what="the stream to open and replay the pending event")

    api.send(signal.SIGTERM)

    assert api.wait() == 0, api.describe()
