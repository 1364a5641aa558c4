"""Build the store and the queue from settings: the real servers, or the embedded pair for dev."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import QueueBroker
from taskbroker.queue.memory import MemoryBroker
from taskbroker.settings import Settings
from taskbroker.store import TaskStore


@dataclass(frozen=True)
class Backends:
    store: TaskStore
    broker: QueueBroker

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()


REDIS_MAX_CONNECTIONS = 100  # redis-py's own default


def redis_client(url: str) -> aioredis.Redis:
    # Short timeouts and one quick retry: callers turn failures into 503s or their own backoff
    # loops, which beats a request hanging for the client library's default retries.
    # A burst past the pool's size waits (briefly) for a free connection: redis-py's default pool
    # fails such a command at once (MaxConnectionsError), a 503 though Redis is healthy.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=5,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
    )
    return aioredis.Redis.from_pool(pool)


def real_backends(settings: Settings, *, connection_name: str) -> Backends:
    store = TaskStore(
        redis_client(settings.redis_url),
        settings.key_prefix,
        settings.retention,
        events_max_length=settings.events_max_length,
        republish_after=settings.republish_after,
    )
    return Backends(store=store, broker=AmqpBroker(settings.amqp_url, connection_name=connection_name))


def embedded_backends(settings: Settings) -> Backends:
    """In-process Redis (fakeredis, running the same Lua scripts) and queue, for one process."""
    from fakeredis import FakeAsyncRedis

    client = FakeAsyncRedis(decode_responses=True)
    return Backends(
        store=TaskStore(
            client,
            settings.key_prefix,
            settings.retention,
            events_max_length=settings.events_max_length,
            republish_after=settings.republish_after,
        ),
        broker=MemoryBroker(),
    )
