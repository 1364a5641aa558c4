"""Losing Redis or RabbitMQ: the API refuses with 503 and leaves nothing half-written behind.

The API under test reaches one server through a TCP proxy the test cuts; the assertions read the
same server directly (the `real` fixture's unproxied clients), so they see what really got stored
or queued.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.conftest import AMQP_URL, REDIS_URL, proxied_url
from tests.support.inprocess import Api, api_client
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
SCHEDULER = "outage"


@pytest.fixture
async def redis_via_proxy(settings: Settings, real: Backends, redis_proxy: TcpProxy) -> AsyncIterator[Api]:
    proxied = settings.model_copy(update={"redis_url": proxied_url(REDIS_URL, redis_proxy)})
    backends = real_backends(proxied, connection_name="taskbroker-test-redis-proxied")
    try:
        async with api_client(proxied, backends) as api:
            yield api
    finally:
        redis_proxy.restore()
        await backends.close()


@pytest.fixture
async def amqp_via_proxy(settings: Settings, real: Backends, amqp_proxy: TcpProxy) -> AsyncIterator[Api]:
    proxied = settings.model_copy(update={"amqp_url": proxied_url(AMQP_URL, amqp_proxy)})
    backends = real_backends(proxied, connection_name="taskbroker-test-amqp-proxied")
    try:
        async with api_client(proxied, backends) as api:
            yield api
    finally:
        amqp_proxy.restore()
        await backends.close()


async def _queue_depth(real: Backends, settings: Settings) -> int:
    return (await real.broker.stats(queue_name(settings.key_prefix, SCHEDULER))).messages


async def _stored_task_ids(real: Backends) -> set[str]:
    prefix = real.store.key_prefix
    hashes = {k.rpartition(":")[2] async for k in real.store.redis.scan_iter(match=f"{prefix}:task:*")}
    attributes = {
        k.rpartition(":")[2] async for k in real.store.redis.scan_iter(match=f"{prefix}:attributes:*")
    }
    deadlines = set(await real.store.redis.zrange(f"{prefix}:deadlines", 0, -1))
    live = set(await real.store.redis.smembers(f"{prefix}:live:{SCHEDULER}"))
    # Short attributes live in the hash: an attributes key may be missing, never left alone.
    assert attributes <= hashes == deadlines == live, "the task records and the live indexes disagree"
    return hashes


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert isinstance(response.json()["detail"], str)
    assert response.json()["detail"]
    assert response.headers.get("Retry-After")


async def _schedule_requests(api: Api) -> list[httpx.Response]:
    batch: dict[str, Any] = {"tasks": [{"scheduler": SCHEDULER, "attributes": ECHO}] * 5}
    return [
        await api.http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": ECHO}),
        await api.http.post("/task/schedule/batch", json=batch),
    ]


async def _recovers(api: Api) -> dict[str, Any]:
    async def ready() -> bool:
        return (await api.http.get("/ready")).status_code == 200

    await eventually(ready, what="/ready to answer 200 after the restore")

    async def scheduled() -> dict[str, Any] | None:
        response = await api.http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": ECHO})
        if response.status_code == 503:
            return None
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    task: dict[str, Any] | None = await eventually(
        scheduled, what="scheduling to work again after the restore"
    )
    assert task is not None
    return task


async def test_redis_outage_is_503_and_publishes_no_orphan_message(
    redis_via_proxy: Api, redis_proxy: TcpProxy, real: Backends, settings: Settings
) -> None:
    api = redis_via_proxy
    await api.register(SCHEDULER)
    before = await api.schedule(SCHEDULER, ECHO)  # a warm connection is the harder case to cut
    assert await _queue_depth(real, settings) == 1

    redis_proxy.cut()
    for response in await _schedule_requests(api):
        _assert_unavailable(response)
    ready = await api.http.get("/ready")
    assert ready.status_code == 503
    assert set(ready.json()["detail"]) == {"redis"}

    assert await _queue_depth(real, settings) == 1
    assert await _stored_task_ids(real) == {before["id"]}

    redis_proxy.restore()
    after = await _recovers(api)
    assert await _queue_depth(real, settings) == 2
    assert await _stored_task_ids(real) == {before["id"], after["id"]}


async def test_rabbitmq_outage_is_503_and_leaves_no_orphan_task_in_redis(
    amqp_via_proxy: Api, amqp_proxy: TcpProxy, real: Backends, settings: Settings
) -> None:
    api = amqp_via_proxy
    await api.register(SCHEDULER)
    before = await api.schedule(SCHEDULER, ECHO)  # opens the publisher channel that the cut breaks

    amqp_proxy.cut()
    for response in await _schedule_requests(api):
        _assert_unavailable(response)
    ready = await api.http.get("/ready")
    assert ready.status_code == 503
    assert set(ready.json()["detail"]) == {"rabbitmq"}

    assert await _stored_task_ids(real) == {before["id"]}
    assert await _queue_depth(real, settings) == 1

    amqp_proxy.restore()
    after = await _recovers(api)
    assert await _stored_task_ids(real) == {before["id"], after["id"]}
    assert await _queue_depth(real, settings) == 2


async def test_rabbitmq_outage_before_the_first_connection_is_503_and_stores_nothing(
    amqp_via_proxy: Api, amqp_proxy: TcpProxy, real: Backends, settings: Settings
) -> None:
    # The scheduler is registered through the direct connection; the API never reached RabbitMQ.
    async with api_client(settings, real) as direct:
        await direct.register(SCHEDULER)
    api = amqp_via_proxy

    amqp_proxy.cut()
    for response in await _schedule_requests(api):
        _assert_unavailable(response)

    assert await _stored_task_ids(real) == set()
    assert await _queue_depth(real, settings) == 0
