"""Fixtures that start real server clusters on loopback for the tests marked ``cluster``.

Each test that takes ``sentinel_set`` gets a fresh set (about 2.5 s to start): the tests kill and
pause its nodes, so no set is shared between tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.errors import StoreUnavailable
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.clusters.sentinel import SentinelSet


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet.running() as cluster:
        yield cluster


@pytest.fixture
def sentinel_settings(settings: Settings, sentinel_set: SentinelSet) -> Settings:
    """The test's settings pointed at the set through its Sentinels (the URL's host is unused:
    a closed port, so a client that ignored the Sentinels would fail)."""
    return settings.model_copy(
        update={
            "redis_url": "redis://127.0.0.1:1/0",
            "redis_sentinels": sentinel_set.sentinels_setting,
            "redis_master": sentinel_set.master_name,
        }
    )


@asynccontextmanager
async def backends_over(settings: Settings) -> AsyncIterator[Backends]:
    """The real RabbitMQ and the Sentinel set's Redis under ``settings``; the queues of the
    schedulers the test registered are deleted afterwards (the set's Redis goes with the set)."""
    backends = real_backends(settings, connection_name="taskbroker-test-sentinel")
    try:
        yield backends
    finally:
        try:
            names = [d.name for d in await backends.store.list_schedulers()]
        except StoreUnavailable:
            names = []
        for name in names:
            await backends.broker.delete(queue_name(settings.key_prefix, name))
        await backends.close()


@pytest.fixture
async def sentinel_backends(sentinel_settings: Settings) -> AsyncIterator[Backends]:
    async with backends_over(sentinel_settings) as backends:
        yield backends
