"""Sync task functions a test holds on their threads until it releases them."""

from __future__ import annotations

import threading

entered = threading.Semaphore(0)
"""Released once by each call of ``wait_for_release`` as it starts."""
released = threading.Event()
calls: list[str] = []


def wait_for_release(name: str) -> str:
    calls.append(name)
    entered.release()
    released.wait()
    return name
