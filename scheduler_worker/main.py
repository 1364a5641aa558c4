"""Start a consumer process: wait for Redis, look up the scheduler, load its runtime, consume.
`taskbroker worker` and `taskbroker dev` both start it here."""

from __future__ import annotations

import asyncio

import structlog

from taskbroker.backends import Backends
from taskbroker.errors import StoreUnavailable
from taskbroker.lifecycle import Backoff, sleep_unless_stopped
from taskbroker.metrics.health import NotReady, ProcessHealth
from taskbroker.models import SchedulerDefinition
from taskbroker.runtimes.base import RuntimeConfig
from taskbroker.runtimes.registry import load_runtime
from taskbroker.scheduler_worker.consumer import Consumer, new_consumer_id
from taskbroker.settings import Settings

log = structlog.get_logger("taskbroker.worker")


async def wait_for_scheduler(
    backends: Backends, scheduler: str, stop: asyncio.Event
) -> SchedulerDefinition | None:
    """The scheduler's definition, waiting out a Redis that is not up yet (compose starts us early)."""
    backoff = Backoff(cap=5.0)
    while not stop.is_set():
        try:
            return await backends.store.get_scheduler(scheduler)
        except StoreUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("worker.waiting_for_redis", error=str(exc), retry_in=round(delay, 2))
            await sleep_unless_stopped(stop, delay)
    return None


async def serve_worker(
    settings: Settings,
    backends: Backends,
    *,
    scheduler: str,
    concurrency: int,
    prefetch: int | None,
    allow: tuple[str, ...],
    options: dict[str, str],
    stop: asyncio.Event,
    health: ProcessHealth | None = None,
) -> None:
    """Run one consumer until ``stop``; ``health`` (the metrics port's /readyz) is ready only
    while the consumer is subscribed or deliberately paused.

    Raises UnknownScheduler, RuntimeUnavailable or RuntimeConfigError at start."""
    if health is not None:

        async def starting() -> str:
            raise NotReady("starting: reading the scheduler's definition from Redis")

        health.add_check("consumer", starting)
    definition = await wait_for_scheduler(backends, scheduler, stop)
    if definition is None:
        return
    runtime_class = load_runtime(definition.runtime)
    consumer_id = new_consumer_id()
    runtime = runtime_class(
        RuntimeConfig(
            scheduler=scheduler,
            concurrency=concurrency,
            allow=allow,
            options=options,
            consumer_id=consumer_id,
            lease_holder=backends.store.lease_holder,
        )
    )
    consumer = Consumer(
        settings=settings,
        store=backends.store,
        broker=backends.broker,
        runtime=runtime,
        scheduler=scheduler,
        concurrency=concurrency,
        prefetch=prefetch,
        consumer_id=consumer_id,
        runtime_name=definition.runtime,
    )
    if health is not None:

        async def subscription() -> str:
            if (state := consumer.subscription_state()) is None:
                raise NotReady("not subscribed to its queue: RabbitMQ unreachable or the queue missing")
            return state

        health.add_check("consumer", subscription)
    await consumer.run(stop)
