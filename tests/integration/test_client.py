"""The Python client against a real API (uvicorn on the test's loop) on the real servers.

The blocking Client runs in a worker thread (asyncio.to_thread), so the server keeps serving on
the test's loop meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from taskbroker.backends import Backends
from taskbroker.client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    TaskEvent,
    TaskSpec,
    Unauthorized,
)
from taskbroker.models import QueueType, SchedulerStatus, Task, TaskState
from taskbroker.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.inprocess import running_consumer
from tests.support.live_api import LiveApi, live_api
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"hello": "world"}}
SLEEP = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 60}}


@pytest.fixture
async def live(settings: Settings, real: Backends) -> AsyncIterator[LiveApi]:
    async with live_api(settings, real) as server:
        yield server


@pytest.fixture
async def admin(live: LiveApi) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live.url, ADMIN_TOKEN) as client:
        status = await client.register_scheduler("alpha", description="client tests")
        assert isinstance(status, SchedulerStatus)
        yield client


async def test_client_wait_returns_the_completed_task(
    settings: Settings, real: Backends, live: LiveApi, admin: AsyncClient
) -> None:
    with Client(live.url, ADMIN_TOKEN) as client:
        task = await asyncio.to_thread(client.schedule, "alpha", ECHO, timedelta(minutes=5))
        assert task.state is TaskState.PENDING
        async with running_consumer(settings, real, "alpha"):
            done = await asyncio.to_thread(client.wait, task.id, timeout=60)
    assert isinstance(done, Task)
    assert done.state is TaskState.COMPLETE
    assert done.result == {"hello": "world"}


async def test_async_client_wait_returns_when_the_task_is_aborted(live: LiveApi, admin: AsyncClient) -> None:
    task = await admin.schedule("alpha", SLEEP)
    waiting = asyncio.create_task(admin.wait(task.id, timeout=60))
    await eventually(lambda: _listening(live), what="wait() to open the event stream")
    assert not waiting.done()
    await admin.abort(task.id)
    done = await waiting
    assert done.state is TaskState.ABORTED


async def _listening(live: LiveApi) -> bool:
    return live.hub.listeners > 0


async def test_wait_gives_up_after_its_timeout(admin: AsyncClient) -> None:
    task = await admin.schedule("alpha", ECHO)  # no consumer: it stays pending
    with pytest.raises(TimeoutError):
        await admin.wait(task.id, timeout=0.5)


async def test_wait_resumes_when_the_stream_drops(settings: Settings, real: Backends, live: LiveApi) -> None:
    proxy = TcpProxy("127.0.0.1", int(live.url.rsplit(":", 1)[1])).start()
    try:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", ADMIN_TOKEN) as client:
            await client.register_scheduler("alpha")
            task = await client.schedule("alpha", ECHO)
            waiting = asyncio.create_task(client.wait(task.id, timeout=60))
            await eventually(lambda: _listening(live), what="wait() to open the event stream")
            proxy.cut()
            async with running_consumer(settings, real, "alpha"):
                await eventually(lambda: _complete(real, task.id), what="the task to complete")
            proxy.restore()
            done = await waiting
    finally:
        proxy.close()
    assert done.state is TaskState.COMPLETE


async def _complete(backends: Backends, task_id: uuid.UUID) -> bool:
    return (await backends.store.get(task_id)).state is TaskState.COMPLETE


async def test_events_resume_after_a_dropped_connection_with_no_gap(
    settings: Settings, real: Backends, live: LiveApi, admin: AsyncClient
) -> None:
    proxy = TcpProxy("127.0.0.1", int(live.url.rsplit(":", 1)[1])).start()
    received: list[TaskEvent] = []

    async def follow() -> None:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", ADMIN_TOKEN) as client:
            async for event in client.events("alpha"):
                received.append(event)

    following = asyncio.create_task(follow())
    try:
        await eventually(lambda: _listening(live), what="events() to open the stream")
        first = await admin.schedule("alpha", ECHO)
        await eventually(lambda: _received(received, 1), what="the first event")
        proxy.cut()
        # While the client is cut off: two more tasks, and all three run to completion.
        later = [await admin.schedule("alpha", ECHO) for _ in range(2)]
        async with running_consumer(settings, real, "alpha"):
            for task in [first, *later]:
                await eventually(lambda t=task: _complete(real, t.id), what="completion")  # type: ignore[misc]
        proxy.restore()
        await eventually(lambda: _received(received, 9), what="every event, after reconnecting")
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        proxy.close()
    ids = [e.id for e in received]
    assert len(ids) == len(set(ids)) == 9
    for task in [first, *later]:
        assert [e.state.value for e in received if e.task_id == task.id] == ["pending", "running", "complete"]


async def _received(received: list[TaskEvent], count: int) -> bool:
    return len(received) >= count


async def test_schedule_many_sends_batches_and_reports_each(live: LiveApi, admin: AsyncClient) -> None:
    seen: list[int] = []
    with Client(live.url, ADMIN_TOKEN) as client:
        tasks = await asyncio.to_thread(
            client.schedule_many,
            (
                TaskSpec("alpha", {"function": "taskbroker.runtimes.builtin:noop", "args": [i]})
                for i in range(25)
            ),
            batch_size=10,
            on_batch=lambda stored: seen.append(len(stored)),
        )
    assert seen == [10, 10, 5]
    assert [t.attributes["args"] for t in tasks] == [[i] for i in range(25)]
    assert len({t.id for t in tasks}) == 25


async def test_errors_name_the_status_and_the_detail(live: LiveApi, admin: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await admin.get(uuid.uuid4())
    assert missing.value.status_code == 404
    assert "does not exist" in str(missing.value.detail)
    assert str(missing.value).startswith("HTTP 404: ")

    task = await admin.schedule("alpha", ECHO)
    await admin.abort(task.id)
    with pytest.raises(Conflict, match=r"HTTP 409: .*already aborted"):
        await admin.abort(task.id)

    with pytest.raises(InvalidRequest) as invalid:
        await admin.schedule("Not A Name!", ECHO)
    assert invalid.value.status_code == 422

    async with AsyncClient(live.url, "tb_000000000000_wrong") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.schedulers()

    issued = await admin.create_token("client", name="tests", schedulers=["alpha"])
    async with AsyncClient(live.url, issued.token) as limited:
        with pytest.raises(Forbidden, match="HTTP 403"):
            await limited.register_scheduler("beta")
        with pytest.raises(NotFound):
            await limited.task_events(task.id).__anext__()


async def test_admins_manage_schedulers_and_tokens(admin: AsyncClient) -> None:
    await admin.register_scheduler("beta", description="second")
    assert [s.name for s in await admin.schedulers()] == ["alpha", "beta"]
    assert (await admin.scheduler("beta")).description == "second"
    await admin.delete_scheduler("beta")
    with pytest.raises(NotFound):
        await admin.scheduler("beta")

    issued = await admin.create_token("worker", name="reader")
    assert issued.token.startswith("tb_")
    assert issued.id in [t.id for t in await admin.tokens()]
    await admin.revoke_token(issued.id)
    assert issued.id not in [t.id for t in await admin.tokens()]


async def test_a_task_event_stream_from_the_client_ends_with_the_final_state(
    settings: Settings, real: Backends, admin: AsyncClient
) -> None:
    task = await admin.schedule("alpha", ECHO)
    async with running_consumer(settings, real, "alpha"):
        events = [event async for event in admin.task_events(task.id)]
    assert [e.state.value for e in events] == ["pending", "running", "complete"]
    assert all(isinstance(e, TaskEvent) for e in events)


async def test_clients_pause_and_resume_a_scheduler_and_list_its_consumers(
    settings: Settings, real: Backends, live: LiveApi, admin: AsyncClient
) -> None:
    async with running_consumer(settings, real, "alpha") as consumer:
        paused = await admin.pause_scheduler("alpha")

        async def listed() -> bool:
            return [c.id for c in await admin.consumers("alpha")] == [consumer.consumer_id]

        await eventually(listed, what="the consumer listed")
        with Client(live.url, ADMIN_TOKEN) as client:
            resumed = await asyncio.to_thread(client.resume_scheduler, "alpha")
            everyone = await asyncio.to_thread(client.consumers)
            with pytest.raises(NotFound):
                await asyncio.to_thread(client.pause_scheduler, "nosuch")

    assert paused.paused is True
    assert resumed.paused is False
    assert [c.scheduler for c in everyone] == ["alpha"]


async def test_the_client_registers_a_quorum_scheduler_or_leaves_the_type_to_the_server(
    admin: AsyncClient, settings: Settings, real: Backends
) -> None:
    quorum = await admin.register_scheduler("replicated", queue_type=QueueType.QUORUM)
    classic = await admin.register_scheduler("plain", queue_type=QueueType.CLASSIC)
    quorum_by_default = settings.model_copy(update={"queue_type": QueueType.QUORUM})
    async with live_api(quorum_by_default, real) as server, AsyncClient(server.url, ADMIN_TOKEN) as client:
        left_to_the_server = await client.register_scheduler("unsaid")

    assert quorum.queue_type is QueueType.QUORUM
    assert classic.queue_type is QueueType.CLASSIC
    assert left_to_the_server.queue_type is QueueType.QUORUM
