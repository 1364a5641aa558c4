"""Per-token task counts in fixed one-minute windows, in Redis so that every API replica counts
against the same budget: ``{prefix}:rate:{token id}:{window}``, kept two minutes."""

from __future__ import annotations

import redis.asyncio as aioredis

from taskbroker.store import redis_call

WINDOW_TTL = 120
"""Seconds a window's count is kept: past its own minute and the next, nobody reads it."""


class RateWindows:
    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._redis = client
        self._prefix = key_prefix

    @redis_call
    async def add(self, token_id: str, window: int, tasks: int) -> int:
        """Count ``tasks`` more for the token in ``window`` (minutes since the epoch); the new
        total. One transaction, so the count never outlives its expiry."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incrby(f"{self._prefix}:rate:{token_id}:{window}", tasks)
        pipe.expire(f"{self._prefix}:rate:{token_id}:{window}", WINDOW_TTL)
        count, _ = await pipe.execute()
        return int(count)
