"""Waiting for a condition instead of sleeping a fixed time: tests poll what they assert on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_DEADLINE = 60.0


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    what: str,
    deadline: float = DEFAULT_DEADLINE,
    interval: float = 0.05,
) -> T:
    """Await ``check()`` until it returns a truthy value, and return it; fail after ``deadline`` s.

    The deadline only bounds a hung test; it is not a performance threshold.
    """
    give_up = time.monotonic() + deadline
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up after {deadline} s waiting for: {what} (last value {value!r})")
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T], *, what: str, deadline: float = DEFAULT_DEADLINE, interval: float = 0.05
) -> T:
    give_up = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up after {deadline} s waiting for: {what} (last value {value!r})")
        time.sleep(interval)
