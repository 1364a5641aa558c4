"""The embedded queue for `taskbroker dev` and tests: in-process, with RabbitMQ's delivery rules.

It honours what the consumers rely on: each message goes to one subscription at a time, round
robin among those under their prefetch; the highest priority ready message goes first; unacked
messages return to the head of their priority when their subscription ends, marked redelivered.
It keeps nothing across restarts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence

from taskbroker.errors import QueueMissing
from taskbroker.models import QueueType
from taskbroker.queue.base import (
    MAX_PRIORITY,
    Delivery,
    LossCause,
    QueueBroker,
    QueueStats,
    Subscription,
    SubscriptionLoss,
)


class _Message:
    __slots__ = ("body", "priority", "redelivered")

    def __init__(self, body: bytes, priority: int = 0, redelivered: bool = False) -> None:
        self.body = body
        self.priority = priority
        self.redelivered = redelivered


class _ReadyMessages:
    """Ready messages, one FIFO per priority, like a RabbitMQ queue with ``x-max-priority``."""

    def __init__(self) -> None:
        self._levels = [deque[_Message]() for _ in range(MAX_PRIORITY + 1)]

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def append(self, message: _Message) -> None:
        self._levels[message.priority].append(message)

    def appendleft(self, message: _Message) -> None:
        self._levels[message.priority].appendleft(message)

    def popleft(self) -> _Message:
        for level in reversed(self._levels):
            if level:
                return level.popleft()
        raise IndexError("no ready message")


class _MemoryDelivery(Delivery):
    __slots__ = ("_subscription", "_tag", "body", "redelivered")

    def __init__(self, subscription: _MemorySubscription, tag: int, message: _Message) -> None:
        self._subscription = subscription
        self._tag = tag
        self.body = message.body
        self.redelivered = message.redelivered

    def ack(self) -> None:
        self._subscription.settle(self._tag, requeue=False)

    def requeue(self) -> None:
        self._subscription.settle(self._tag, requeue=True)


class _MemoryQueue:
    def __init__(self) -> None:
        self.ready = _ReadyMessages()
        self.subscriptions: list[_MemorySubscription] = []
        self._turn = 0

    def dispatch(self) -> None:
        while self.ready:
            eligible = [s for s in self.subscriptions if s.has_room()]
            if not eligible:
                return
            self._turn += 1
            eligible[self._turn % len(eligible)].deliver(self.ready.popleft())


class _MemorySubscription(Subscription):
    def __init__(self, queue: _MemoryQueue, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        self._queue = queue
        self._prefetch = prefetch
        self._on_delivery = on_delivery
        self._unacked: dict[int, _Message] = {}
        self._tags = itertools.count(1)
        self._lost = asyncio.Event()
        self._loss: SubscriptionLoss | None = None
        self._active = True

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    @property
    def loss(self) -> SubscriptionLoss | None:
        return self._loss

    def has_room(self) -> bool:
        return self._active and len(self._unacked) < self._prefetch

    def deliver(self, message: _Message) -> None:
        tag = next(self._tags)
        self._unacked[tag] = message
        asyncio.get_running_loop().call_soon(self._hand_over, _MemoryDelivery(self, tag, message))

    def _hand_over(self, delivery: _MemoryDelivery) -> None:
        # A delivery still on its way when the subscription ended went back to the queue with
        # the rest: like a closed channel, an ended subscription delivers nothing more.
        if self._active:
            self._on_delivery(delivery)

    def settle(self, tag: int, *, requeue: bool) -> None:
        message = self._unacked.pop(tag, None)
        if message is None:
            return
        if requeue:
            message.redelivered = True
            self._queue.ready.appendleft(message)
        self._queue.dispatch()

    async def cancel(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self._active:
            return
        self._active = False
        self._queue.subscriptions.remove(self)
        for message in reversed(list(self._unacked.values())):
            message.redelivered = True
            self._queue.ready.appendleft(message)
        self._unacked.clear()
        self._queue.dispatch()

    def drop(self, loss: SubscriptionLoss) -> None:
        """End the subscription as the broker would (its queue deleted, or in tests a lost
        connection): unacked messages go back, ``lost`` is set with ``loss``."""
        if not self._active:
            return
        self._end()
        self._loss = loss
        self._lost.set()


class MemoryBroker(QueueBroker):
    def __init__(self) -> None:
        self._queues: dict[str, _MemoryQueue] = {}

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _queue(self, name: str) -> _MemoryQueue:
        try:
            return self._queues[name]
        except KeyError:
            raise QueueMissing(
                f"queue {name!r} does not exist: register the scheduler to declare it"
            ) from None

    async def declare(self, queue: str, queue_type: QueueType = QueueType.CLASSIC) -> None:
        # One process, one copy: both types behave alike here (priorities are refused for a
        # quorum scheduler's tasks before they reach a queue: TaskStore.create).
        self._queues.setdefault(queue, _MemoryQueue())

    async def delete(self, queue: str) -> None:
        removed = self._queues.pop(queue, None)
        if removed is not None:
            for subscription in list(removed.subscriptions):
                subscription.drop(SubscriptionLoss(LossCause.CANCELLED_BY_BROKER, "queue deleted"))

    async def stats(self, queue: str) -> QueueStats:
        q = self._queue(queue)
        return QueueStats(messages=len(q.ready), consumers=len(q.subscriptions))

    async def publish(
        self, queue: str, bodies: Sequence[bytes], priorities: Sequence[int] | None = None
    ) -> None:
        q = self._queue(queue)
        for body, priority in zip(bodies, priorities or [0] * len(bodies), strict=True):
            q.ready.append(_Message(body, min(max(priority, 0), MAX_PRIORITY)))
        q.dispatch()

    async def subscribe(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> Subscription:
        q = self._queue(queue)
        subscription = _MemorySubscription(q, prefetch, on_delivery)
        q.subscriptions.append(subscription)
        q.dispatch()
        return subscription
