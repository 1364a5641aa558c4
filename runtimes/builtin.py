"""Functions every deployment can run, to smoke-test it: the Inline runtime's default allow-list.

Any client may call them with any arguments, so none may be made to run unbounded: ``sleep`` has
a maximum, and ``echo`` and ``fail`` only hand back what the attribute size limit let in."""

from __future__ import annotations

import asyncio
from typing import Any


def noop() -> None:
    """Do nothing: measures the broker itself."""


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments, so a client sees its attributes made the round trip."""
    return kwargs


MAX_SLEEP_SECONDS = 3600.0
"""The longest ``sleep`` waits. Its arguments come from any client token, and a task's timeout
may be days ahead: unbounded, one request could hold a consumer's slot that long."""


async def sleep(seconds: object = 1.0) -> float:
    """Wait, cancellably: for testing long tasks, abort and timeouts. ``seconds`` is whatever the
    task sent (hence ``object``): anything but a number from 0 to MAX_SLEEP_SECONDS (NaN,
    infinity, a bool, text) fails at once with a ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(
            f"sleep takes seconds from 0 to {MAX_SLEEP_SECONDS:g}, a number; got {type(seconds).__name__}"
        )
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:  # NaN compares False: refused too
        shown = repr(seconds) if isinstance(seconds, float) or abs(seconds) < 10**15 else "a longer number"
        raise ValueError(f"sleep takes seconds from 0 to {MAX_SLEEP_SECONDS:g}; got {shown}")
    await asyncio.sleep(seconds)
    return seconds


def fail(message: str = "failed on purpose") -> None:
    """Raise, so a deployment can check how failures are reported."""
    raise RuntimeError(message)
