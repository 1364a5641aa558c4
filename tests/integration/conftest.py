"""Fixtures for the in-process integration tests: an API client per backend pair and a recorder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from tests.conftest import REDIS_URL
from tests.support.inprocess import Api, api_client
from tests.support.recorder import Recording


@pytest.fixture
async def api(settings: Settings, backends: Backends) -> AsyncIterator[Api]:
    """The API over both backend pairs (the test runs once per pair)."""
    async with api_client(settings, backends) as client:
        yield client


@pytest.fixture
async def real_api(settings: Settings, real: Backends) -> AsyncIterator[Api]:
    """The API over the real servers only."""
    async with api_client(settings, real) as client:
        yield client


@pytest.fixture
def recording(key_prefix: str) -> Iterator[Recording]:
    """Side effects always go to the real Redis, under the test's prefix, whatever the backends."""
    recorder = Recording(REDIS_URL, key_prefix)
    yield recorder
    recorder.close()
