"""Fixtures shared by every test: isolated settings and real or embedded backends.

Every test gets its own key prefix, which namespaces its Redis keys and its queue names; the
fixtures delete both afterwards, because CI shares the servers with other runs.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from taskbroker.backends import Backends, embedded_backends, real_backends, redis_client
from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.settings import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL, Settings
from tests.support.tcp_proxy import TcpProxy

REDIS_URL = os.environ.get("TASKBROKER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
AMQP_URL = os.environ.get("TASKBROKER_TEST_AMQP_URL", DEFAULT_AMQP_URL)
ADMIN_TOKEN = f"test-admin-{secrets.token_hex(24)}"
"""The bootstrap admin token of every API the tests start."""
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def key_prefix() -> str:
    return f"tbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return Settings(
        redis_url=REDIS_URL,
        amqp_url=AMQP_URL,
        key_prefix=key_prefix,
        lease=3.0,
        sweep_interval=0.2,
        shutdown_grace=10.0,
        admin_token=ADMIN_TOKEN,
    )


async def cleanup(settings: Settings, extra_queues: tuple[str, ...] = ()) -> None:
    """Delete the test's Redis keys and every queue under its prefix that a scheduler named."""
    client = redis_client(REDIS_URL)
    broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-cleanup")
    try:
        names = {str(name) for name in await client.hkeys(f"{settings.key_prefix}:schedulers")}
        keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        for name in sorted(names):
            await broker.delete(queue_name(settings.key_prefix, name))
        for queue in extra_queues:
            await broker.delete(queue)
    finally:
        await broker.close()
        await client.aclose()


@pytest.fixture
async def real(settings: Settings) -> AsyncIterator[Backends]:
    """The real Redis and RabbitMQ on this machine, under the test's prefix."""
    backends = real_backends(settings, connection_name="taskbroker-test")
    yield backends
    await backends.close()
    await cleanup(settings)


@pytest.fixture
async def embedded(settings: Settings) -> AsyncIterator[Backends]:
    backends = embedded_backends(settings)
    yield backends
    await backends.close()


@pytest.fixture(params=["real", "embedded"])
async def backends(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Backends]:
    """Both backend pairs, for contract tests that must hold on each."""
    if request.param == "real":
        built = real_backends(settings, connection_name="taskbroker-test")
    else:
        built = embedded_backends(settings)
    yield built
    await built.close()
    if request.param == "real":
        await cleanup(settings)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(*_host_port(REDIS_URL, 6379)).start()
    yield proxy
    proxy.close()


@pytest.fixture
def amqp_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(*_host_port(AMQP_URL, 5672)).start()
    yield proxy
    proxy.close()


def proxied_url(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))
