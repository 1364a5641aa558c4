"""Redis behind Sentinel (taskbroker.backends.redis_client with TASKBROKER_REDIS_SENTINELS), on a
real primary + replica + three sentinels: after the primary is SIGKILLed, commands and batched
script calls reach the promoted replica by themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from taskbroker.backends import redis_client
from taskbroker.script_calls import ScriptCalls
from taskbroker.settings import Settings
from tests.clusters.sentinel import SentinelSet
from tests.support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


@pytest.fixture
async def client(sentinel_settings: Settings) -> AsyncIterator[Redis]:
    redis = redis_client(sentinel_settings)
    yield redis
    await redis.aclose()


async def _promoted(cluster: SentinelSet) -> bool:
    return cluster.master_address() == ("127.0.0.1", cluster.replica_port)


async def test_the_client_finds_the_primary_through_the_sentinels(
    client: Redis, sentinel_set: SentinelSet
) -> None:
    await client.set("tbtest:where", "here")

    direct = Redis(port=sentinel_set.primary_port, decode_responses=True)
    try:
        assert await direct.get("tbtest:where") == "here"
    finally:
        await direct.aclose()


async def test_script_calls_reach_the_promoted_replica_once_the_primary_is_killed(
    client: Redis, sentinel_set: SentinelSet
) -> None:
    echo = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', ARGV[1])")
    calls = ScriptCalls(client, min_replicas=1, replicas_timeout_ms=3000)
    # On the replica too (so the count survives), and the batch's connection is kept.
    assert await calls.call(echo, ["tbtest:count"], replicated=True) == 1

    sentinel_set.kill("primary")
    await eventually(lambda: _promoted(sentinel_set), what="the replica promoted", deadline=30)

    # The kept connection is dead; its one retry must ask the Sentinels, not redial the old
    # address. The promoted replica has no script cache either (NOSCRIPT: loaded, sent again).
    assert await calls.call(echo, ["tbtest:count"]) == 2
    assert await client.get("tbtest:count") == "2"


async def _waits(cluster: SentinelSet) -> int:
    primary = Redis(port=cluster.primary_port, decode_responses=True)
    try:
        stats = await primary.info("commandstats")
        return int(stats.get("cmdstat_wait", {}).get("calls", 0))
    finally:
        await primary.aclose()


async def test_a_batch_of_replicated_calls_pays_one_wait(client: Redis, sentinel_set: SentinelSet) -> None:
    incr = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', ARGV[1])")
    await client.script_load(incr.script)
    calls = ScriptCalls(client, min_replicas=1, replicas_timeout_ms=3000)
    before = await _waits(sentinel_set)

    replies = await asyncio.gather(*(calls.call(incr, ["tbtest:n"], replicated=True) for _ in range(20)))

    assert sorted(replies) == list(range(1, 21))
    assert await _waits(sentinel_set) == before + 1  # one loop turn, one batch, one WAIT
