"""Build every store and the queue of a process from settings, once: the real servers, or the
embedded pair for dev.

Each store registers its Lua scripts (hashing them) when it is built, so a process builds its
stores here at start and hands them to whatever needs them; nothing builds one per request."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from taskbroker.events import EventLog
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import QueueBroker
from taskbroker.queue.memory import MemoryBroker
from taskbroker.rate_windows import RateWindows
from taskbroker.schedule_store import ScheduleStore
from taskbroker.settings import Settings
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
        )
        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return cls(
            store=store,
            broker=broker,
            schedules=ScheduleStore(client, settings.key_prefix, settings.schedule_history),
            tokens=TokenStore(client, settings.key_prefix, admin_token, script_calls=store.script_calls),
            events=EventLog(client, settings.key_prefix),
            webhooks=WebhookDeliveries(store),
            rate_windows=RateWindows(client, settings.key_prefix),
        )

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
    broker = AmqpBroker(
        settings.amqp_urls, connection_name=connection_name, delivery_limit=settings.quorum_delivery_limit
    )
    return Backends.over(redis_client(settings.redis_url), broker, settings)


def embedded_backends(settings: Settings) -> Backends:
    """In-process Redis (fakeredis, running the same Lua scripts) and queue, for one process."""
    from fakeredis import FakeAsyncRedis

    return Backends.over(FakeAsyncRedis(decode_responses=True), MemoryBroker(), settings)
