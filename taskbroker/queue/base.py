"""The contract every queue backend honours; tests/contract runs against each implementation.

Messages are opaque bytes (taskbroker sends task ids). Queues are durable and messages
persistent; ``publish`` returns only once the broker has confirmed every message. Queues are
priority queues: a message carries a priority 0 (lowest, the default) to MAX_PRIORITY, and of the
messages ready in a queue the highest priority is delivered first (FIFO within one priority).
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskbroker.models import QueueType

MAX_PRIORITY = 9
"""Priorities are 0..9: RabbitMQ's ``x-max-priority`` of every scheduler queue (10 levels)."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    messages: int
    consumers: int


class Delivery(abc.ABC):
    """One message handed to one consumer. Unacknowledged deliveries go back to the queue when
    their subscription ends, so the consumer must ack only once the message's work is safe."""

    body: bytes
    redelivered: bool

    @abc.abstractmethod
    def ack(self) -> None:
        """Remove the message for good. A no-op if the subscription is already gone."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Hand the message back to the queue for any consumer."""


class LossCause(enum.StrEnum):
    """Why a subscription ended without ``cancel()``; the value is what a consumer logs."""

    CANCELLED_BY_BROKER = "cancelled_by_broker"
    """The broker cancelled the consumer: its queue was deleted, its home node went down (a
    classic queue), or it moved (a quorum queue's member). The connection is fine."""
    CHANNEL_CLOSED = "channel_closed"
    """The subscription's channel closed (a channel error); the connection is fine."""
    CONNECTION_LOST = "connection_lost"
    """The connection to the broker went away (network, broker restart, closed by an operator)."""


@dataclass(frozen=True, slots=True)
class SubscriptionLoss:
    cause: LossCause
    detail: str
    """What the broker or the network said, for the log."""


class Subscription(abc.ABC):
    """A running consumer of one queue."""

    @property
    @abc.abstractmethod
    def lost(self) -> asyncio.Event:
        """Set when the subscription ended without cancel(), whatever the cause (``loss`` says
        which). From then on no delivery arrives; its unacked deliveries go back to the queue
        (if the queue still exists) and acking or requeueing them is a no-op. A lost
        subscription never comes back: subscribe again."""

    @property
    @abc.abstractmethod
    def loss(self) -> SubscriptionLoss | None:
        """Why the subscription was lost; None while ``lost`` is not set."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop deliveries; unacknowledged ones go back to the queue."""


class QueueBroker(abc.ABC):
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection. Raises BrokerUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise BrokerUnavailable unless the broker answers."""

    @abc.abstractmethod
    async def declare(self, queue: str, queue_type: QueueType = QueueType.CLASSIC) -> None:
        """Create the durable queue if it does not exist: a priority queue (classic), or a
        replicated one without priorities (quorum). Raises QueueIncompatible if it exists with
        other arguments (another type, or declared by a taskbroker without priorities)."""

    @abc.abstractmethod
    async def delete(self, queue: str) -> None: ...

    @abc.abstractmethod
    async def stats(self, queue: str) -> QueueStats:
        """Messages ready and consumers attached. Raises QueueMissing or QueueUnavailable."""

    @abc.abstractmethod
    async def publish(
        self, queue: str, bodies: Sequence[bytes], priorities: Sequence[int] | None = None
    ) -> None:
        """Publish persistent messages; return once all are confirmed.

        ``priorities`` gives each message's priority (0..MAX_PRIORITY), in the order of
        ``bodies``; None publishes every message at priority 0.

        Raises BrokerUnavailable (unreachable, or a confirm did not come), QueueUnavailable (the
        queue's node is down) or QueueMissing. On an exception some messages may still have been
        enqueued, and a retry after a lost node may enqueue one twice: consumers must tolerate
        both.
        """

    @abc.abstractmethod
    async def subscribe(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> Subscription:
        """Start consuming with manual acks; at most ``prefetch`` deliveries are unacked at once.

        Each message goes to exactly one subscription at a time. Raises BrokerUnavailable,
        QueueUnavailable (the queue's node is down: retry later) or QueueMissing.
        """
