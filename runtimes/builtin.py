"""Functions every deployment can run, to smoke-test it: the Inline runtime's default allow-list."""

from __future__ import annotations

import asyncio
from typing import Any


def noop() -> None:
    """Do nothing: measures the broker itself."""


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments, so a client sees its attributes made the round trip."""
    return kwargs


async def sleep(seconds: float = 1.0) -> float:
    """Wait, cancellably: for testing long tasks, abort and timeouts."""
    await asyncio.sleep(seconds)
    return seconds


def fail(message: str = "failed on purpose") -> None:
    """Raise, so a deployment can check how failures are reported."""
    raise RuntimeError(message)
