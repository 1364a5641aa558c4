"""Fixtures that start real server clusters on loopback for the tests marked ``cluster``.

Each test that takes ``sentinel_set`` gets a fresh set (about 2.5 s to start): the tests kill and
pause its nodes, so no set is shared between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
