"""Fixtures for the Docker runtime's tests against the real engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from taskbroker.runtimes.docker import MARKER_LABEL, SCHEDULER_LABEL
from taskbroker.runtimes.docker_engine import DockerEngine
from tests.support.container_engine import require_engine


@pytest.fixture
def docker_host() -> str:
    return require_engine()


@pytest.fixture
def docker_scheduler() -> str:
    """A scheduler name no other test uses, so its containers (found by label) are this test's."""
    return f"dk-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def engine(docker_host: str, docker_scheduler: str) -> AsyncIterator[DockerEngine]:
    """A client to the engine; removes every container of the test's scheduler afterwards."""
    client = DockerEngine(docker_host)
    yield client
    for container in await client.list_containers({MARKER_LABEL: "1", SCHEDULER_LABEL: docker_scheduler}):
        await client.remove(container.id)
    await client.close()
