"""Task events: appended atomically with each transition, streamed as SSE, resumable without gaps.

The API runs on a real uvicorn on the test's loop (streams need a real server), over the real
Redis and RabbitMQ; store-level specifications also run on the embedded backends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.client.sse import SseDecoder
from taskbroker.events import EventKind, EventLog, TaskEvent
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from tests.conftest import ADMIN_HEADERS, REDIS_URL, cleanup, proxied_url
from tests.support.inprocess import running_consumer
from tests.support.live_api import LiveApi, live_api
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

ECHO = {"function": "runtimes.builtin:echo", "kwargs": {"n": 1}}
SLEEP = {"function": "runtimes.builtin:sleep", "kwargs": {"seconds": 30}}


@pytest.fixture
async def live(settings: Settings, real: Backends) -> AsyncIterator[LiveApi]:
    async with live_api(settings, real) as server:
        yield server


@pytest.fixture
async def http(live: LiveApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, headers=ADMIN_HEADERS, timeout=30) as client:
        assert (await client.post("/scheduler", json={"name": "alpha"})).status_code == 201
        assert (await client.post("/scheduler", json={"name": "beta"})).status_code == 201
        yield client


async def schedule(http: httpx.AsyncClient, scheduler: str = "alpha", attributes: Any = ECHO) -> str:
    response = await http.post("/task/schedule", json={"scheduler": scheduler, "attributes": attributes})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


class OpenStream:
    """An SSE response read message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self._decoder = SseDecoder()

    async def next_event(self) -> TaskEvent | None:
        """The next event, or None when the server ended the stream."""
        async for line in self._lines:
            message = self._decoder.feed(line)
            if message is not None:
                event = TaskEvent.model_validate_json(message.data)
                assert message.id == event.id
                assert message.event == event.state.value
                return event
        return None

    async def events(self, count: int) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        for _ in range(count):
            event = await self.next_event()
            assert event is not None, f"the stream ended after {found}"
            found.append(event)
        return found

    async def rest(self) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        while (event := await self.next_event()) is not None:
            found.append(event)
        return found


def stream(http: httpx.AsyncClient, path: str, **kwargs: Any) -> Any:
    return http.stream("GET", path, **kwargs)


def states(events: list[TaskEvent]) -> list[str]:
    return [e.state.value for e in events]


async def test_task_stream_replays_the_history_then_ends_after_the_final_state(
    settings: Settings, real: Backends, http: httpx.AsyncClient
) -> None:
    task_id = await schedule(http)
    async with running_consumer(settings, real, "alpha"), stream(http, f"/task/{task_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await OpenStream(response).rest()
    assert states(events) == ["pending", "running", "complete"]
    assert {str(e.task_id) for e in events} == {task_id}
    assert [e.attempt for e in events] == [0, 1, 1]
    assert [e.id for e in events] == sorted(events_ids := [e.id for e in events], key=_id_key)
    assert len(set(events_ids)) == 3


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


async def test_task_stream_resumed_with_last_event_id_delivers_what_happened_meanwhile(
    settings: Settings, real: Backends, http: httpx.AsyncClient
) -> None:
    task_id = await schedule(http)
    async with stream(http, f"/task/{task_id}/events") as response:
        (pending,) = await OpenStream(response).events(1)
    assert pending.state is EventKind.PENDING
    # Disconnected: the task runs to completion meanwhile.
    async with running_consumer(settings, real, "alpha"):
        await eventually(lambda: _state_is(real, task_id, TaskState.COMPLETE), what="the task to complete")
    async with stream(http, f"/task/{task_id}/events", headers={"Last-Event-ID": pending.id}) as response:
        missed = await OpenStream(response).rest()
    assert states(missed) == ["running", "complete"]
    async with stream(http, f"/task/{task_id}/events", params={"after": missed[0].id}) as response:
        assert states(await OpenStream(response).rest()) == ["complete"]


async def _state_is(backends: Backends, task_id: str, state: TaskState) -> bool:
    return (await backends.store.get(uuid.UUID(task_id))).state is state


async def test_scheduler_stream_resumed_after_a_disconnect_has_no_gap_and_no_duplicates(
    settings: Settings, real: Backends, http: httpx.AsyncClient
) -> None:
    first = [await schedule(http) for _ in range(3)]
    async with stream(http, "/events", params={"scheduler": "alpha", "after": "0-0"}) as response:
        seen = await OpenStream(response).events(3)
    assert states(seen) == ["pending"] * 3
    assert [str(e.task_id) for e in seen] == first
    # While nobody listens: more tasks, on both schedulers, and all of them run.
    later = [await schedule(http) for _ in range(3)]
    other = await schedule(http, "beta")
    async with running_consumer(settings, real, "alpha"), running_consumer(settings, real, "beta"):
        for task_id in [*first, *later, other]:
            await eventually(partial(_state_is, real, task_id, TaskState.COMPLETE), what="completion")
        async with stream(
            http, "/events", params={"scheduler": "alpha"}, headers={"Last-Event-ID": seen[-1].id}
        ) as response:
            opened = OpenStream(response)
            missed = await opened.events(2 * 3 + 3 * 3)
            # Then live: a new task's events arrive on the same stream.
            live_task = await schedule(http)
            live_events = await opened.events(3)
    everything = seen + missed + live_events
    ids = [e.id for e in everything]
    assert len(ids) == len(set(ids)), "no duplicates"
    assert ids == sorted(ids, key=_id_key)
    assert all(e.scheduler == "alpha" for e in everything)
    per_task = {
        t: states([e for e in everything if str(e.task_id) == t]) for t in [*first, *later, live_task]
    }
    assert all(s == ["pending", "running", "complete"] for s in per_task.values()), per_task
    # Exactly what the stream holds for alpha after the first three: nothing skipped.
    stored = [e for e in await EventLog(real.store.redis, settings.key_prefix).read_after(seen[-1].id)]
    assert [e.id for e in stored if e.scheduler == "alpha"] == [e.id for e in missed + live_events]


async def test_a_client_cannot_read_another_clients_task_events(
    settings: Settings, real: Backends, live: LiveApi, http: httpx.AsyncClient
) -> None:
    mine, theirs = [await _client_token(http) for _ in range(2)]
    async with (
        httpx.AsyncClient(base_url=live.url, headers=_bearer(mine), timeout=30) as me,
        httpx.AsyncClient(base_url=live.url, headers=_bearer(theirs), timeout=30) as them,
    ):
        their_task = await schedule(them)
        my_task = await schedule(me)
        response = await me.get(f"/task/{their_task}/events")
        assert response.status_code == 404
        assert "does not exist" in response.json()["detail"]
        async with stream(me, "/events", params={"after": "0-0"}) as response:
            opened = OpenStream(response)
            (event,) = await opened.events(1)
            # Admin's own task, scheduled after: also invisible to this client.
            await schedule(http)
            await schedule(me)
            (second,) = await opened.events(1)
        assert str(event.task_id) == my_task
        assert second.owner == event.owner
        assert event.owner not in (None, "admin")


async def _client_token(http: httpx.AsyncClient, **fields: Any) -> str:
    response = await http.post("/token", json={"role": "client", **fields})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_limited_to_one_scheduler_may_not_stream_another(
    live: LiveApi, http: httpx.AsyncClient
) -> None:
    token = await _client_token(http, schedulers=["alpha"])
    async with httpx.AsyncClient(base_url=live.url, headers=_bearer(token), timeout=30) as limited:
        response = await limited.get("/events", params={"scheduler": "beta"})
    assert response.status_code == 403


async def test_events_need_a_token(live: LiveApi) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as anonymous:
        assert (await anonymous.get("/events")).status_code == 401
        assert (await anonymous.get(f"/task/{uuid.uuid4()}/events")).status_code == 401


@pytest.mark.parametrize("bad", ["yesterday", "12", "1-2-3", "-1-0"])
async def test_a_malformed_resume_point_is_a_422(http: httpx.AsyncClient, bad: str) -> None:
    task_id = await schedule(http)
    assert (await http.get("/events", headers={"Last-Event-ID": bad})).status_code == 422
    assert (await http.get(f"/task/{task_id}/events", params={"after": bad})).status_code == 422


async def test_an_unknown_task_has_no_event_stream(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/task/{uuid.uuid4()}/events")
    assert response.status_code == 404


async def test_a_listener_that_disconnects_is_forgotten(live: LiveApi, http: httpx.AsyncClient) -> None:
    task_id = await schedule(http, attributes=SLEEP)
    async with stream(http, f"/task/{task_id}/events") as response:
        await OpenStream(response).events(1)
        assert live.hub.listeners == 1
    await eventually(lambda: _no_listeners(live), what="the hub to drop the listener")


async def _no_listeners(live: LiveApi) -> bool:
    return live.hub.listeners == 0


async def test_open_streams_end_when_the_server_stops(settings: Settings, real: Backends) -> None:
    async with (
        live_api(settings, real) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as client,
        stream(client, "/events") as response,
    ):
        opened = OpenStream(response)
        stopping = asyncio.create_task(_stop(server))
        assert await opened.rest() == []
        await stopping


async def _stop(server: LiveApi) -> None:
    server.server.handle_exit(0, None)


async def test_redis_unreachable_is_a_503_before_the_stream_starts(
    settings: Settings, real: Backends, redis_proxy: TcpProxy
) -> None:
    proxied = settings.model_copy(update={"redis_url": proxied_url(REDIS_URL, redis_proxy)})
    backends = real_backends(proxied, connection_name="taskbroker-test-redis-proxied")
    try:
        async with (
            live_api(proxied, backends) as server,
            httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as client,
        ):
            async with stream(client, "/events") as response:
                assert response.status_code == 200
                opened = OpenStream(response)
                redis_proxy.cut()
                # Mid-stream: the stream ends, so the client resumes elsewhere or later.
                assert await opened.rest() == []
            response = await client.get("/events")
            assert response.status_code == 503
            assert response.headers["Retry-After"]
    finally:
        redis_proxy.restore()
        await backends.close()


# The store side: one event per transition, in the transition's own script.


async def _new_task(backends: Backends, scheduler: str = "alpha") -> str:
    await backends.store.register_scheduler(SchedulerDefinition(name=scheduler))
    task_id = uuid.uuid4()
    await backends.store.create(
        [NewTask(task_id, scheduler, {}, utcnow().replace(year=utcnow().year + 1), owner="tok")], now=utcnow()
    )
    return str(task_id)


async def _history(backends: Backends, task_id: str) -> list[TaskEvent]:
    log = EventLog(backends.store.redis, backends.store.key_prefix)
    return (await log.task_history(uuid.UUID(task_id))).events


async def test_every_transition_appends_its_event(backends: Backends) -> None:
    task_id = await _new_task(backends)
    claim = await backends.store.claim(task_id, consumer="c1", lease=30, max_attempts=3)
    assert claim.task is not None
    await backends.store.finish(task_id, consumer="c1", state=TaskState.FAILED, error="boom")
    events = await _history(backends, task_id)
    assert states(events) == ["pending", "running", "failed"]
    assert [e.owner for e in events] == ["tok"] * 3


async def test_a_lapsed_lease_requeued_emits_requeued(backends: Backends) -> None:
    task_id = await _new_task(backends)
    await backends.store.claim(task_id, consumer="gone", lease=-1, max_attempts=3)
    assert await backends.store.requeue([task_id]) == 1
    assert states(await _history(backends, task_id)) == ["pending", "running", "requeued"]


async def test_a_discarded_task_leaves_no_event(backends: Backends, settings: Settings) -> None:
    task_id = await _new_task(backends)
    await backends.store.discard([uuid.UUID(task_id)])
    log = EventLog(backends.store.redis, settings.key_prefix)
    assert await log.read_after("0-0") == []


async def test_an_aborted_task_ends_with_aborted(backends: Backends) -> None:
    task_id = await _new_task(backends)
    await backends.store.abort(uuid.UUID(task_id), now=utcnow())
    assert states(await _history(backends, task_id)) == ["pending", "aborted"]


async def test_the_final_event_is_rebuilt_when_the_stream_no_longer_holds_it(
    backends: Backends, settings: Settings
) -> None:
    task_id = await _new_task(backends)
    await backends.store.abort(uuid.UUID(task_id), now=utcnow())
    await backends.store.redis.xtrim(f"{settings.key_prefix}:events", maxlen=0)
    history = await EventLog(backends.store.redis, settings.key_prefix).task_history(uuid.UUID(task_id))
    assert history.final
    assert states(history.events) == ["aborted"]


async def test_old_events_are_trimmed_by_age(backends: Backends, settings: Settings) -> None:
    for _ in range(3):
        await _new_task(backends)
    log = EventLog(backends.store.redis, settings.key_prefix)
    assert len(await log.read_after("0-0")) == 3
    await log.trim(retention=60, now=time.time() + 3600)
    assert await log.read_after("0-0") == []


async def test_the_stream_is_bounded_by_length(settings: Settings) -> None:
    bounded = settings.model_copy(update={"events_max_length": 100})
    backends = real_backends(bounded, connection_name="taskbroker-test")
    try:
        for _ in range(5):
            await backends.store.register_scheduler(SchedulerDefinition(name="alpha"))
            far = utcnow().replace(year=utcnow().year + 1)
            await backends.store.create(
                [NewTask(uuid.uuid4(), "alpha", {}, far) for _ in range(200)], now=utcnow()
            )
        length = await backends.store.redis.xlen(f"{settings.key_prefix}:events")
        assert length < 1000
    finally:
        await backends.close()
        await cleanup(bounded)
