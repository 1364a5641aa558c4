"""The CLI's client commands as a user runs them: real `taskbroker` processes against a real API
(uvicorn on the test's loop) over the real servers."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator

import pytest

from taskbroker.backends import Backends
from taskbroker.client import AsyncClient
from taskbroker.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.inprocess import running_consumer
from tests.support.live_api import LiveApi, live_api
from tests.support.processes import taskbroker_command
from tests.support.waiting import eventually

LINE_DEADLINE = 60.0
"""Bounds a hung test only; not a performance threshold."""


@pytest.fixture
async def live(settings: Settings, real: Backends) -> AsyncIterator[LiveApi]:
    async with live_api(settings, real) as server, AsyncClient(server.url, ADMIN_TOKEN) as admin:
        await admin.register_scheduler("alpha")
        await admin.register_scheduler("beta")
        yield server


def _env(live: LiveApi) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBROKER_")}
    env.update(TASKBROKER_URL=live.url, TASKBROKER_TOKEN=ADMIN_TOKEN, COLUMNS="200")
    return env


async def _cli(live: LiveApi, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *taskbroker_command(),
        *args,
        env=_env(live),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_tasks_watch_prints_a_line_per_state_change(
    settings: Settings, real: Backends, live: LiveApi
) -> None:
    watcher = await _cli(live, "tasks", "watch", "--scheduler", "alpha")
    try:
        await eventually(lambda: _listening(live), what="tasks watch to open its stream")
        async with AsyncClient(live.url, ADMIN_TOKEN) as admin:
            await admin.schedule("beta", {"function": "taskbroker.runtimes.builtin:noop"})  # not watched
            task = await admin.schedule("alpha", {"function": "taskbroker.runtimes.builtin:noop"})
            async with running_consumer(settings, real, "alpha"):
                assert watcher.stdout is not None
                lines = [
                    (await asyncio.wait_for(watcher.stdout.readline(), LINE_DEADLINE)).decode()
                    for _ in range(3)
                ]
    finally:
        watcher.terminate()
        await watcher.wait()
    for line, state in zip(lines, ["pending", "running", "complete"], strict=True):
        assert re.match(rf"^\S+Z  {task.id}  alpha  {state}\s+attempt [01]$", line.strip()), line


async def _listening(live: LiveApi) -> bool:
    return live.hub.listeners > 0


async def test_schedule_count_schedules_in_batches_and_prints_every_id(live: LiveApi) -> None:
    process = await _cli(
        live,
        "schedule",
        "alpha",
        "--function",
        "taskbroker.runtimes.builtin:noop",
        "--count",
        "25",
        "--batch-size",
        "10",
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), LINE_DEADLINE)
    assert process.returncode == 0, stderr.decode()
    ids = stdout.decode().split()
    assert len(set(ids)) == 25
    assert "25/25" in stderr.decode()  # the progress bar's last state
    async with AsyncClient(live.url, ADMIN_TOKEN) as admin:
        assert (await admin.scheduler("alpha")).live_tasks == 25


async def test_schedule_wait_follows_the_event_stream_to_the_result(
    settings: Settings, real: Backends, live: LiveApi
) -> None:
    async with running_consumer(settings, real, "alpha"):
        process = await _cli(
            live,
            "schedule",
            "alpha",
            "--function",
            "taskbroker.runtimes.builtin:echo",
            "--kwarg",
            "x=1",
            "--wait",
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), LINE_DEADLINE)
    assert process.returncode == 0, stderr.decode()
    assert '"state": "complete"' in stdout.decode()
    assert '"x": 1' in stdout.decode()
