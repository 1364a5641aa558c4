"""Fixtures for end-to-end tests: real `taskbroker` processes under the test's key prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskbroker.settings import Settings
from tests.conftest import ADMIN_HEADERS, AMQP_URL, REDIS_URL, cleanup
from tests.support.processes import Processes, process_env
from tests.support.recorder import Recording


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    """Starts processes on the real servers with a short lease; kills leftovers, then cleans up."""
    env = process_env(key_prefix=settings.key_prefix, redis_url=REDIS_URL, amqp_url=AMQP_URL)
    started = Processes(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()
        asyncio.run(cleanup(settings))


@pytest.fixture
def recording(key_prefix: str) -> Iterator[Recording]:
    recorder = Recording(REDIS_URL, key_prefix)
    yield recorder
    recorder.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, headers=ADMIN_HEADERS) as client:
        yield client
