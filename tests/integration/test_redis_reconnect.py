"""A dropped Redis connection costs a caller nothing: the next command and the next script call
are retried once on a fresh connection (taskbroker.backends.redis_client), on the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from taskbroker.backends import redis_client
from taskbroker.script_calls import ScriptCalls
from tests.conftest import REDIS_URL


@pytest.fixture
async def named() -> AsyncIterator[tuple[Redis, str]]:
    """A client whose connections carry a name of their own, so the test can kill exactly them."""
    name = f"tbtest-kill-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in REDIS_URL else "?"
    client = redis_client(f"{REDIS_URL}{separator}client_name={name}")
    yield client, name
    await client.aclose()


async def _kill_connections_named(name: str) -> int:
    """CLIENT KILL every connection of that name (from another client); how many there were."""
    admin = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        ids = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await admin.aclose()


async def test_the_command_after_its_connection_was_killed_is_retried_and_succeeds(
    named: tuple[Redis, str],
) -> None:
    client, name = named
    assert await client.ping()
    assert await _kill_connections_named(name) >= 1

    assert await client.ping()


async def test_the_script_call_after_its_connection_was_killed_is_retried_and_succeeds(
    named: tuple[Redis, str],
) -> None:
    client, name = named
    echo = client.register_script(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
    calls = ScriptCalls(client)
    assert await calls.call(echo, ["before"]) == "before"  # loads it; the connection is kept
    assert await _kill_connections_named(name) >= 1

    assert await calls.call(echo, ["after"]) == "after"
