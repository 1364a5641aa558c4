"""Build every store and the queue of a process from settings, once: the real servers, or the
embedded pair for dev.

Each store registers its Lua scripts (hashing them) when it is built, so a process builds its
stores here at start and hands them to whatever needs them; nothing builds one per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from taskbroker.events import EventLog
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import QueueBroker
from taskbroker.queue.memory import MemoryBroker
from taskbroker.rate_windows import RateWindows
from taskbroker.schedule_store import ScheduleStore
from taskbroker.settings import Settings, sentinel_addresses
from taskbroker.store import TaskStore
from taskbroker.tokens import TokenStore
from taskbroker.webhook_store import WebhookDeliveries


@dataclass(frozen=True)
class Backends:
    """The queue and every Redis store of one process, all over the task store's one client."""

    store: TaskStore
    broker: QueueBroker
    schedules: ScheduleStore
    tokens: TokenStore
    events: EventLog
    webhooks: WebhookDeliveries
    rate_windows: RateWindows

    @classmethod
    def over(cls, client: aioredis.Redis, broker: QueueBroker, settings: Settings) -> Backends:
        """Every store over ``client`` (under ``settings.key_prefix``), beside ``broker``."""
        store = TaskStore(
            client,
            settings.key_prefix,
            settings.retention,
            events_max_length=settings.events_max_length,
            republish_after=settings.republish_after,
            failed_retention=settings.failed_retention,
            min_replicas=settings.redis_min_replicas,
            replicas_timeout_ms=settings.redis_min_replicas_timeout,
        )
        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return cls(
            store=store,
            broker=broker,
            schedules=ScheduleStore(
                client, settings.key_prefix, settings.schedule_history, script_calls=store.script_calls
            ),
            tokens=TokenStore(client, settings.key_prefix, admin_token, script_calls=store.script_calls),
            events=EventLog(client, settings.key_prefix),
            webhooks=WebhookDeliveries(store),
            rate_windows=RateWindows(client, settings.key_prefix),
        )

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()


REDIS_MAX_CONNECTIONS = 100  # redis-py's own default
REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis reply may take (TASKBROKER_REDIS_MIN_REPLICAS_TIMEOUT stays below it)."""


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool (finds the primary through the Sentinels on each connect) that
    waits for a free connection past its size, as the plain pool does."""


def redis_client(target: str | Settings) -> aioredis.Redis:
    """The one Redis client of a process: from a URL alone (tests, tools), or from a process's
    settings, through the Sentinels when TASKBROKER_REDIS_SENTINELS is set, with the TLS files.

    With Sentinels the URL still gives the data nodes' user, password, database and scheme
    (``rediss://`` for TLS); its host and port are not used."""
    settings = target if isinstance(target, Settings) else None
    url = target.redis_url if isinstance(target, Settings) else target
    # Short timeouts and one quick retry: callers turn failures into 503s or their own backoff
    # loops, which beats a request hanging for the client library's default retries.
    # A burst past the pool's size waits (briefly) for a free connection: redis-py's default pool
    # fails such a command at once (MaxConnectionsError), a 503 though Redis is healthy.
    # The asyncio Retry: the synchronous one calls the command's coroutine function and hands
    # back the coroutine unawaited, so a dropped connection was never retried.
    options: dict[str, Any] = {
        "max_connections": REDIS_MAX_CONNECTIONS,
        "timeout": 5,
        "decode_responses": True,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": 3,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
    }
    tls = _tls_files(settings) if settings else {}
    if settings is None or not settings.redis_sentinels:
        if tls and url.startswith("rediss://"):
            options.update(tls)
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **options))
    return _sentinel_client(settings, url, options, tls)


def _sentinel_client(
    settings: Settings, url: str, options: dict[str, Any], tls: dict[str, Any]
) -> aioredis.Redis:
    node = parse_url(url)  # the data nodes' credentials, database and scheme
    for name in ("username", "password", "db"):
        if name in node:
            options[name] = node[name]
    if node.get("connection_class") is SSLConnection:
        options.update(ssl=True, **tls)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        "decode_responses": True,
    }
    if settings.redis_sentinel_password is not None:
        sentinel_options["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_sentinel_tls:
        sentinel_options.update(ssl=True, **tls)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings.redis_sentinels), sentinel_kwargs=sentinel_options
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_master, connection_pool_class=BlockingSentinelPool, **options
    )
    return client


def _tls_files(settings: Settings) -> dict[str, Any]:
    files = {
        "ssl_ca_certs": settings.redis_tls_ca_file,
        "ssl_certfile": settings.redis_tls_cert_file,
        "ssl_keyfile": settings.redis_tls_key_file,
    }
    return {name: str(path) for name, path in files.items() if path is not None}


def real_backends(settings: Settings, *, connection_name: str) -> Backends:
    broker = AmqpBroker(
        settings.amqp_urls, connection_name=connection_name, delivery_limit=settings.quorum_delivery_limit
    )
    return Backends.over(redis_client(settings), broker, settings)


def embedded_backends(settings: Settings) -> Backends:
    """In-process Redis (fakeredis, running the same Lua scripts) and queue, for one process."""
    from fakeredis import FakeAsyncRedis

    # One process, no replicas: nothing to WAIT for.
    alone = settings.model_copy(update={"redis_min_replicas": 0})
    return Backends.over(FakeAsyncRedis(decode_responses=True), MemoryBroker(), alone)
