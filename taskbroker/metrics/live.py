"""Gauges of shared state, read from Redis and RabbitMQ when Prometheus scrapes the API.

Reading them is async I/O, and prometheus_client's collectors are synchronous. So the scrape
handler first awaits ``LiveState.read()`` on the event loop (bounded by a timeout, never
blocking the loop), and only then renders the text, with the reading's gauges as plain metric
families beside the process's own registry. With Redis or RabbitMQ down the scrape still
answers: their gauges are missing and ``taskbroker_redis_up`` / ``taskbroker_rabbitmq_up`` are 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskbroker.errors import QueueMissing, QueueUnavailable, TaskbrokerError
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker, QueueStats
from taskbroker.store import LiveCensus, TaskStore

log = structlog.get_logger("taskbroker.metrics")

READ_TIMEOUT = 3.0
"""Seconds each server may take to answer a scrape (Prometheus' default scrape timeout is 10 s)."""


@dataclass(frozen=True)
class LiveReading:
    """What one scrape found; None where a server did not answer."""

    census: LiveCensus | None
    queues: dict[str, QueueStats] | None

    def metric_families(self) -> list[Metric]:
        redis_up = GaugeMetricFamily(
            "taskbroker_redis_up", "1 if Redis answered this scrape, else 0.", value=self.census is not None
        )
        rabbitmq_up = GaugeMetricFamily(
            "taskbroker_rabbitmq_up",
            "1 if RabbitMQ answered this scrape, else 0.",
            value=self.queues is not None,
        )
        families: list[Metric] = [redis_up, rabbitmq_up]
        if self.census is not None:
            schedulers = GaugeMetricFamily(
                "taskbroker_schedulers", "Registered schedulers.", value=len(self.census.per_scheduler)
            )
            live = GaugeMetricFamily(
                "taskbroker_live_tasks",
                "Live (delayed, pending or running) tasks per scheduler.",
                labels=["scheduler"],
            )
            for name, count in self.census.per_scheduler.items():
                live.add_metric([name], count)
            delayed = GaugeMetricFamily(
                "taskbroker_delayed_tasks",
                "Delayed tasks per scheduler: waiting for their not_before (a delay or a retry's backoff).",
                labels=["scheduler"],
            )
            for name, count in (self.census.delayed_per_scheduler or {}).items():
                delayed.add_metric([name], count)
            by_state = GaugeMetricFamily(
                "taskbroker_live_tasks_by_state",
                "Live tasks of all schedulers by state (running: holding a lease, lapsed ones included).",
                labels=["state"],
            )
            by_state.add_metric(["delayed"], self.census.delayed)
            by_state.add_metric(["pending"], self.census.pending)
            by_state.add_metric(["running"], self.census.running)
            paused = GaugeMetricFamily(
                "taskbroker_scheduler_paused",
                "1 while the scheduler is paused (its consumers take no new tasks), else 0.",
                labels=["scheduler"],
            )
            for name in self.census.per_scheduler:
                paused.add_metric([name], name in self.census.paused)
            families += [schedulers, live, delayed, by_state, paused]
        if self.queues is not None:
            messages = GaugeMetricFamily(
                "taskbroker_queue_messages",
                "Messages ready in the scheduler's queue (tasks waiting for a consumer).",
                labels=["scheduler"],
            )
            consumers = GaugeMetricFamily(
                "taskbroker_queue_consumers",
                "Consumers attached to the scheduler's queue.",
                labels=["scheduler"],
            )
            for name, stats in self.queues.items():
                messages.add_metric([name], stats.messages)
                consumers.add_metric([name], stats.consumers)
            families += [messages, consumers]
        return families


class LiveState:
    """Reads the live gauges for one API app. Remembers the scheduler names of the last reading,
    so queue depth is still reported while Redis is down."""

    def __init__(self, store: TaskStore, broker: QueueBroker, *, timeout: float = READ_TIMEOUT) -> None:
        self._store = store
        self._broker = broker
        self._timeout = timeout
        self._schedulers: Sequence[str] = ()

    async def read(self) -> LiveReading:
        census = await self._census()
        if census is not None:
            self._schedulers = list(census.per_scheduler)
        return LiveReading(census=census, queues=await self._queues(self._schedulers))

    async def _census(self) -> LiveCensus | None:
        try:
            return await asyncio.wait_for(self._store.live_census(), self._timeout)
        except (TaskbrokerError, TimeoutError) as exc:
            log.warning("metrics.redis_unavailable", error=str(exc) or "timed out")
            return None

    async def _queues(self, schedulers: Sequence[str]) -> dict[str, QueueStats] | None:
        prefix = self._store.key_prefix

        async def stats(name: str) -> QueueStats | None:
            try:
                return await self._broker.stats(queue_name(prefix, name))
            except (QueueMissing, QueueUnavailable):  # deleted, not declared yet, or its node down
                return None

        try:
            async with asyncio.timeout(self._timeout):
                if not schedulers:
                    await self._broker.ping()
                    return {}
                found = await asyncio.gather(*(stats(name) for name in schedulers))
        except (TaskbrokerError, TimeoutError) as exc:
            log.warning("metrics.rabbitmq_unavailable", error=str(exc) or "timed out")
            return None
        return {name: s for name, s in zip(schedulers, found, strict=True) if s is not None}


class _Exposition(Collector):
    """The process registry followed by one reading's families, for a single rendering."""

    def __init__(self, registry: CollectorRegistry, extra: Iterable[Metric]) -> None:
        self._registry = registry
        self._extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._extra


def render(registry: CollectorRegistry, reading: LiveReading | None = None) -> bytes:
    """The Prometheus text format of ``registry`` plus, on the API, the live gauges."""
    if reading is None:
        return generate_latest(registry)
    return generate_latest(_Exposition(registry, reading.metric_families()))
