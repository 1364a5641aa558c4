"""Script calls of one loop turn share a pipeline (taskbroker/script_calls.py), on the real Redis:
each caller still gets exactly its own reply or its own error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskbroker.backends import redis_client
from taskbroker.errors import NotReplicated
from taskbroker.script_calls import ScriptCalls
from tests.conftest import REDIS_URL


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = redis_client(REDIS_URL)
    yield redis
    await redis.aclose()


def _fresh_script(client: Redis, body: str) -> AsyncScript:
    # A unique comment gives a SHA Redis has never seen, so its first call meets NOSCRIPT.
    return client.register_script(f"-- {uuid.uuid4().hex}\n{body}")


async def test_concurrent_calls_each_get_their_own_reply_even_for_a_script_redis_never_saw(
    client: Redis,
) -> None:
    echo = _fresh_script(client, "return ARGV[1] .. ':' .. ARGV[2]")
    calls = ScriptCalls(client)

    replies = await asyncio.gather(*(calls.call(echo, ["p", str(n)]) for n in range(50)))

    assert replies == [f"p:{n}" for n in range(50)]


async def test_a_failing_script_fails_only_its_own_caller(client: Redis) -> None:
    echo = _fresh_script(client, "return ARGV[1]")
    broken = _fresh_script(client, "return redis.error_reply('refused ' .. ARGV[1])")
    for script in (echo, broken):  # known to Redis: the batch goes out as one pipeline
        await client.script_load(script.script)
    calls = ScriptCalls(client)

    replies = await asyncio.gather(
        calls.call(echo, ["a"]),
        calls.call(broken, ["b"]),
        calls.call(echo, ["c"]),
        return_exceptions=True,
    )

    assert replies[0] == "a"
    assert isinstance(replies[1], ResponseError)
    assert "refused b" in str(replies[1])
    assert replies[2] == "c"


async def test_a_lone_call_is_sent_on_its_own(client: Redis) -> None:
    echo = _fresh_script(client, "return ARGV[1]")

    assert await ScriptCalls(client).call(echo, ["only"]) == "only"


async def test_a_batch_that_times_out_fails_every_caller_and_leaves_no_stale_reply(
    client: Redis,
) -> None:
    # No retry, and a socket timeout far shorter than the script: the batch's replies come late.
    impatient = Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=0.1, retry=None)
    slow = _fresh_script(
        impatient,
        "local t = redis.call('TIME') local stop = t[1] * 1000000 + t[2] + 500000 "
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop return ARGV[1]",
    )
    echo = _fresh_script(impatient, "return ARGV[1]")
    for script in (slow, echo):
        await impatient.script_load(script.script)
    calls = ScriptCalls(impatient)
    try:
        replies = await asyncio.gather(
            calls.call(slow, ["late"]), calls.call(echo, ["late too"]), return_exceptions=True
        )

        assert all(isinstance(r, RedisTimeoutError) for r in replies), replies
        await client.ping()  # answered once the slow script has ended and its replies are out
        assert await calls.call(echo, ["fresh"]) == "fresh"
    finally:
        await impatient.aclose()


async def test_replicated_calls_fail_as_not_replicated_when_too_few_replicas_confirm(client: Redis) -> None:
    # The test Redis has no replica: WAIT 1 answers 0 once its timeout has passed.
    echo = _fresh_script(client, "return ARGV[1]")
    await client.script_load(echo.script)
    calls = ScriptCalls(client, min_replicas=1, replicas_timeout_ms=50)

    replies = await asyncio.gather(
        calls.call(echo, ["asked"], replicated=True),
        calls.call(echo, ["not asked"]),
        return_exceptions=True,
    )

    assert isinstance(replies[0], NotReplicated)
    assert "0 of the 1 replicas" in str(replies[0])
    assert replies[1] == "not asked"


async def test_replicated_calls_wait_for_nothing_when_no_replica_is_asked_for(client: Redis) -> None:
    echo = _fresh_script(client, "return ARGV[1]")

    assert await ScriptCalls(client).call(echo, ["fine"], replicated=True) == "fine"


async def test_a_replicated_call_redis_never_saw_is_loaded_sent_again_and_still_waits(client: Redis) -> None:
    echo = _fresh_script(client, "return ARGV[1]")  # NOSCRIPT first: the second batch waits too
    calls = ScriptCalls(client, min_replicas=1, replicas_timeout_ms=50)

    with pytest.raises(NotReplicated):
        await calls.call(echo, ["asked"], replicated=True)
    assert await calls.call(echo, ["known now"]) == "known now"
