"""Re-running and bulk changes through the Python clients and the CLI, against a real API
(uvicorn on the test's loop) on the real servers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import pytest

from taskbroker.backends import Backends
from taskbroker.client import AsyncClient, BulkChange, Client, Conflict
from taskbroker.models import TaskState
from taskbroker.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.inprocess import running_consumer
from tests.support.live_api import LiveApi, live_api
from tests.support.processes import taskbroker_command
from tests.support.waiting import eventually

FAIL = {"function": "taskbroker.runtimes.builtin:fail", "kwargs": {"message": "boom"}}
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"v": 1}}


@pytest.fixture
async def live(settings: Settings, real: Backends) -> AsyncIterator[LiveApi]:
    async with live_api(settings, real) as server:
        yield server


@pytest.fixture
async def admin(live: LiveApi) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live.url, ADMIN_TOKEN) as client:
        await client.register_scheduler("alpha")
        yield client


async def test_client_retry_reruns_a_failed_task_and_wait_waits_for_the_rerun(
    settings: Settings, real: Backends, admin: AsyncClient
) -> None:
    task = await admin.schedule("alpha", FAIL)
    async with running_consumer(settings, real, "alpha"):
        assert (await admin.wait(task.id, timeout=60)).state is TaskState.FAILED

        retried = await admin.retry(task.id)
        # Answered once its message is confirmed: the consumer may have taken it already.
        assert retried.state in (TaskState.PENDING, TaskState.RUNNING, TaskState.FAILED)
        # The stream replays the first failure first: wait must not stop there.
        again = await admin.wait(task.id, timeout=60)
    assert (again.state, again.attempts) == (TaskState.FAILED, 2)
    await admin.retry(task.id, delay=3600)
    with pytest.raises(Conflict):
        await admin.retry(task.id)


async def test_blocking_client_bulk_abort_and_retry_and_final_listing(
    live: LiveApi, admin: AsyncClient
) -> None:
    ids = {(await admin.schedule("alpha", ECHO)).id for _ in range(3)}
    with Client(live.url, ADMIN_TOKEN) as client:
        aborted = await asyncio.to_thread(client.abort_many, "alpha", "pending", limit=2)
        assert isinstance(aborted, BulkChange)
        assert aborted.changed == 2
        assert set(aborted.ids) <= ids
        page = await asyncio.to_thread(client.tasks, "alpha", "aborted")
        assert {t.id for t in page.tasks} == set(aborted.ids)
        retried = await asyncio.to_thread(client.retry_many, "alpha", "aborted", delay=3600)
    assert set(retried.ids) == set(aborted.ids)
    for task_id in retried.ids:
        assert (await admin.get(task_id)).state is TaskState.DELAYED


async def _cli(live: LiveApi, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBROKER_")}
    env.update(TASKBROKER_URL=live.url, TASKBROKER_TOKEN=ADMIN_TOKEN, COLUMNS="250")
    process = await asyncio.create_subprocess_exec(
        *taskbroker_command(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), errors.decode()


async def test_the_cli_aborts_lists_and_retries_tasks(live: LiveApi, admin: AsyncClient) -> None:
    task = await admin.schedule("alpha", ECHO)

    code, out, errors = await _cli(live, "tasks", "abort", "--scheduler", "alpha", "--state", "pending")
    assert code == 0, errors
    assert json.loads(out)["ids"] == [str(task.id)]

    code, out, errors = await _cli(live, "tasks", "list", "--state", "aborted")
    assert code == 0, errors
    assert str(task.id) in out

    code, out, errors = await _cli(live, "task", "retry", str(task.id), "--delay", "600")
    assert code == 0, errors
    assert json.loads(out)["state"] == "delayed"

    code, out, errors = await _cli(live, "tasks", "abort", "--state", "delayed")
    assert json.loads(out)["changed"] == 1
    code, out, errors = await _cli(live, "tasks", "retry", "--scheduler", "alpha", "--state", "aborted")
    assert code == 0, errors
    assert json.loads(out)["ids"] == [str(task.id)]

    code, out, errors = await _cli(live, "task", "retry", str(task.id))
    assert code == 1
    assert "pending" in errors


async def test_wait_on_a_retried_task_waits_for_its_next_final_state_not_the_replayed_one(
    live: LiveApi, admin: AsyncClient
) -> None:
    task = await admin.schedule("alpha", ECHO)
    await admin.abort(task.id)
    await admin.retry(task.id, delay=3600)  # live again (delayed), its old `aborted` event stays
    waiting = asyncio.create_task(admin.wait(task.id, timeout=60))
    await eventually(lambda: _listening(live), what="wait() to open the event stream")

    await admin.abort_many("alpha", "delayed")

    done = await waiting
    assert done.state is TaskState.ABORTED
    assert done.attempts == 0


async def _listening(live: LiveApi) -> bool:
    return live.hub.listeners > 0
