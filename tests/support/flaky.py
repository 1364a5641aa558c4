"""Inline task functions that fail on purpose, to test retries: each counts its runs per ``tag``
in Redis (under the test's prefix), so a later attempt knows how many came before it."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from taskbroker.runtimes.base import TaskFailed, TaskRetry

MODULE = "tests.support.flaky"


async def _run_number(tag: str, redis_url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await client.incr(f"{prefix}:recorder:flaky:{tag}"))
    finally:
        await client.aclose()


async def fail_times(tag: str, times: int, *, redis_url: str, prefix: str) -> dict[str, Any]:
    """Raise on the first ``times`` runs (``failure <n>``), then succeed."""
    run = await _run_number(tag, redis_url, prefix)
    if run <= times:
        raise RuntimeError(f"failure {run}")
    return {"succeeded_on_run": run}


async def retry_once_after(tag: str, after: float, *, redis_url: str, prefix: str) -> dict[str, Any]:
    """Ask for a retry ``after`` seconds on the first run (TaskRetry), then succeed."""
    run = await _run_number(tag, redis_url, prefix)
    if run == 1:
        raise TaskRetry(after=after, message="not yet")
    return {"succeeded_on_run": run}


async def fail_for_good(tag: str, *, redis_url: str, prefix: str) -> None:
    """Fail without a retry, whatever attempts are left."""
    run = await _run_number(tag, redis_url, prefix)
    raise TaskFailed(f"broken beyond repair (run {run})", retry=False)


def call(function: str, tag: str, redis_url: str, prefix: str, **kwargs: Any) -> dict[str, Any]:
    """Inline task attributes calling ``function`` of this module."""
    return {
        "function": f"{MODULE}:{function}",
        "kwargs": {"tag": tag, "redis_url": redis_url, "prefix": prefix, **kwargs},
    }
