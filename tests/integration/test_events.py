"""Task events: appended atomically with each transition, streamed as SSE, resumable without gaps.

The API runs on a real uvicorn on the test's loop (streams need a real server), over the real
Redis and RabbitMQ; store-level specifications also run on the embedded backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.event_models import EventKind, TaskEvent
from taskbroker.events import EventLog
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.token_models import Role
from taskbroker.tokens import TokenStore
from tests.conftest import ADMIN_HEADERS, REDIS_URL, cleanup, proxied_url
from tests.support.event_stream import OpenStream, stream
from tests.support.inprocess import running_consumer
from tests.support.live_api import LiveApi, live_api
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
SLEEP = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 30}}


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
    token: str = (await _new_token(http, "client", **fields))["token"]
    return token


async def _new_token(http: httpx.AsyncClient, role: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/token", json={"role": role, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_limited_to_one_scheduler_may_not_stream_another(
    live: LiveApi, http: httpx.AsyncClient
) -> None:
    token = await _client_token(http, schedulers=["alpha"])
    async with httpx.AsyncClient(base_url=live.url, headers=_bearer(token), timeout=30) as limited:
        response = await limited.get("/events", params={"scheduler": "beta"})
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["worker", "client"])
async def test_a_scoped_tokens_event_stream_leaves_out_the_tasks_of_other_schedulers(
    live: LiveApi, http: httpx.AsyncClient, role: str
) -> None:
    token = (await _new_token(http, role, schedulers=["alpha"]))["token"]
    async with httpx.AsyncClient(base_url=live.url, headers=_bearer(token), timeout=30) as scoped:
        await schedule(http, "beta")
        seen = await schedule(scoped if role == "client" else http, "alpha")
        async with stream(scoped, "/events", params={"after": "0-0"}) as response:
            (event,) = await OpenStream(response).events(1)
    assert str(event.task_id) == seen


async def test_events_need_a_token(live: LiveApi) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as anonymous:
        assert (await anonymous.get("/events")).status_code == 401
        assert (await anonymous.get(f"/task/{uuid.uuid4()}/events")).status_code == 401


@pytest.mark.parametrize("bad", ["yesterday", "12", "1-2-3", "-1-0"])
async def test_a_malformed_resume_point_is_a_422(http: httpx.AsyncClient, bad: str) -> None:
    task_id = await schedule(http)
    assert (await http.get("/events", headers={"Last-Event-ID": bad})).status_code == 422
    assert (await http.get(f"/task/{task_id}/events", params={"after": bad})).status_code == 422


BEYOND_64_BITS = ["99999999999999999999-0", "0-99999999999999999999", "18446744073709551616-0"]
HIGHEST_EVENT_ID = "18446744073709551615-18446744073709551615"


@pytest.mark.parametrize("bad", BEYOND_64_BITS)
@pytest.mark.parametrize("sent_as", ["after", "Last-Event-ID"])
@pytest.mark.parametrize("path", ["/events", "/task/{task_id}/events"])
async def test_a_resume_point_beyond_64_bits_is_a_422_before_the_stream_starts(
    http: httpx.AsyncClient, bad: str, sent_as: str, path: str
) -> None:
    task_id = await schedule(http)
    where: dict[str, Any] = (
        {"params": {"after": bad}} if sent_as == "after" else {"headers": {"Last-Event-ID": bad}}
    )
    async with stream(http, path.format(task_id=task_id), **where) as response:
        await response.aread()
    assert response.status_code == 422, response.text
    assert "64-bit" in str(response.json()["detail"])


async def test_the_highest_event_id_is_a_resume_point_after_which_nothing_comes(
    settings: Settings, real: Backends, http: httpx.AsyncClient
) -> None:
    task_id = await schedule(http)
    assert (await http.post(f"/task/{task_id}/abort")).status_code == 200
    async with stream(http, f"/task/{task_id}/events", params={"after": HIGHEST_EVENT_ID}) as response:
        assert response.status_code == 200
        assert await OpenStream(response).rest() == []
    log = EventLog(real.store.redis, settings.key_prefix)
    assert await log.read_after(HIGHEST_EVENT_ID) == []


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


# Tokens revoked or expired while their streams are open

STREAM_PATHS = ["/events", "/task/{task_id}/events"]
HANG_GUARD = 60.0
"""Bounds a hung test only (a stream that never ends); not a performance threshold."""


@asynccontextmanager
async def _api_checking_tokens_often(
    settings: Settings, backends: Backends
) -> AsyncIterator[tuple[LiveApi, httpx.AsyncClient]]:
    checking = settings.model_copy(update={"stream_token_check": 0.2})
    async with (
        live_api(checking, backends) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as admin,
    ):
        assert (await admin.post("/scheduler", json={"name": "alpha"})).status_code == 201
        yield server, admin


async def _ends(opened: OpenStream) -> list[TaskEvent]:
    return await asyncio.wait_for(opened.rest(), HANG_GUARD)


@pytest.mark.parametrize("path", STREAM_PATHS)
async def test_the_open_streams_of_a_revoked_token_end(settings: Settings, real: Backends, path: str) -> None:
    async with _api_checking_tokens_often(settings, real) as (live, admin):
        created = await _new_token(admin, "client")
        async with httpx.AsyncClient(base_url=live.url, headers=_bearer(created["token"]), timeout=30) as me:
            task_id = await schedule(me)
            where = path.format(task_id=task_id)
            replayed = {"params": {"after": "0-0"}}
            async with stream(me, where, **replayed) as first, stream(me, where, **replayed) as second:
                opened = [OpenStream(first), OpenStream(second)]
                for each in opened:
                    assert [e.state for e in await each.events(1)] == [EventKind.PENDING]
                assert (await admin.delete(f"/token/{created['id']}")).status_code == 204

                assert [await _ends(each) for each in opened] == [[], []]
            assert (await me.get(where)).status_code == 401
        await eventually(lambda: _no_listeners(live), what="the hub to drop the ended listeners")


@pytest.mark.parametrize("path", STREAM_PATHS)
async def test_the_open_streams_of_a_token_end_when_it_expires(
    settings: Settings, real: Backends, path: str
) -> None:
    async with _api_checking_tokens_often(settings, real) as (live, admin):
        task_id = await schedule(admin)
        tokens = TokenStore(real.store.redis, settings.key_prefix, admin_token=None)
        _, token = await tokens.create(role=Role.WORKER, expires_at=utcnow() + timedelta(seconds=5))
        async with httpx.AsyncClient(base_url=live.url, headers=_bearer(token), timeout=30) as worker:
            where = path.format(task_id=task_id)
            async with stream(worker, where, params={"after": "0-0"}) as response:
                opened = OpenStream(response)
                assert [e.state for e in await opened.events(1)] == [EventKind.PENDING]

                assert await _ends(opened) == []
            assert (await worker.get(where)).status_code == 401


async def test_revoking_one_token_leaves_the_streams_of_others_open(
    settings: Settings, real: Backends
) -> None:
    async with _api_checking_tokens_often(settings, real) as (live, admin):
        kept, revoked = await _client_token(admin), await _new_token(admin, "client")
        async with (
            httpx.AsyncClient(base_url=live.url, headers=_bearer(kept), timeout=30) as me,
            httpx.AsyncClient(base_url=live.url, headers=_bearer(revoked["token"]), timeout=30) as them,
            stream(me, "/events") as mine,
            stream(them, "/events") as theirs,
        ):
            assert (await admin.delete(f"/token/{revoked['id']}")).status_code == 204
            assert await _ends(OpenStream(theirs)) == []
            task_id = await schedule(me)
            (event,) = await OpenStream(mine).events(1)
    assert str(event.task_id) == task_id


# Caps on open streams: per token and per API process

RAW_REQUEST = "GET /events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n\r\n"


@asynccontextmanager
async def _capped_api(
    settings: Settings, backends: Backends
) -> AsyncIterator[tuple[LiveApi, httpx.AsyncClient]]:
    capped = settings.model_copy(update={"streams_per_token": 2, "streams_per_process": 3})
    async with (
        live_api(capped, backends) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as admin,
    ):
        assert (await admin.post("/scheduler", json={"name": "alpha"})).status_code == 201
        yield server, admin


async def _refused(client: httpx.AsyncClient, path: str) -> httpx.Response:
    async with stream(client, path) as response:
        await response.aread()
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    return response


async def test_streams_beyond_the_per_token_and_per_process_caps_are_429_with_retry_after(
    settings: Settings, real: Backends
) -> None:
    async with _capped_api(settings, real) as (live, admin), contextlib.AsyncExitStack() as held:
        a, b, c = [
            await held.enter_async_context(
                httpx.AsyncClient(base_url=live.url, headers=_bearer(await _client_token(admin)), timeout=30)
            )
            for _ in range(3)
        ]
        task_id = await schedule(a)
        for path in ("/events", f"/task/{task_id}/events"):
            assert (await held.enter_async_context(stream(a, path))).status_code == 200

        per_token = await _refused(a, "/events")
        assert "2 open event streams per token" in per_token.json()["detail"]
        await _refused(a, f"/task/{task_id}/events")
        assert (await held.enter_async_context(stream(b, "/events"))).status_code == 200
        per_process = await _refused(c, "/events")
        assert "3 open event streams" in per_process.json()["detail"]
        assert live.streams.open == 3


async def test_a_stream_frees_its_slot_when_it_closes_even_if_the_client_vanishes(
    settings: Settings, real: Backends
) -> None:
    async with _capped_api(settings, real) as (live, admin):
        token = await _client_token(admin)
        async with httpx.AsyncClient(base_url=live.url, headers=_bearer(token), timeout=30) as me:
            host, port = live.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(RAW_REQUEST.format(token=token).encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            async with stream(me, "/events") as response:
                assert response.status_code == 200
                await _refused(me, "/events")
            await eventually(lambda: _open_streams(live, 1), what="the closed stream's slot to be freed")

            writer.transport.abort()  # gone without a word: a reset connection
            await eventually(lambda: _open_streams(live, 0), what="the vanished client's slot to be freed")
            async with stream(me, "/events") as first, stream(me, "/events") as second:
                assert (first.status_code, second.status_code) == (200, 200)


async def _open_streams(live: LiveApi, count: int) -> bool:
    return live.streams.open == count


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
