"""RabbitMQ through pika's asyncio adapter: durable queues, persistent messages, pipelined
publisher confirms (never a synchronous wait per message) and manual acks.

A broker is given one node or a cluster's nodes. It holds one connection, to one node at a time,
and moves to the next node when that connection fails or closes; a publish that lost its node
before its confirm is published again through the next one, within the confirm timeout."""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import pika
import structlog
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.channel import Channel
from pika.exceptions import AMQPError, ChannelClosed, ChannelClosedByBroker

from taskbroker.errors import (
    BrokerUnavailable,
    IncompatibleLibrary,
    QueueIncompatible,
    QueueMissing,
    QueueUnavailable,
    TaskbrokerError,
)
from taskbroker.models import QueueType
from taskbroker.queue.amqp_acks import AckBatcher
from taskbroker.queue.base import (
    MAX_PRIORITY,
    Delivery,
    LossCause,
    QueueBroker,
    QueueStats,
    Subscription,
    SubscriptionLoss,
)

PERSISTENT = 2
QUEUE_ARGUMENTS = {"x-max-priority": MAX_PRIORITY, "x-queue-version": 2}
"""Version 2 classic queues (RabbitMQ 3.10+, the only version from 4.0): a persistent message is
confirmed in about half the time of version 1, and the queue costs RabbitMQ less CPU per message
(bench/results/history.md)."""
VERSION_1_QUEUE_ARGUMENTS = {"x-max-priority": MAX_PRIORITY}
"""What taskbroker declared before version 2 queues; such a queue is used as it is."""
PRECONDITION_FAILED = 406
NOT_FOUND = 404
PUBLISH_RETRY_DELAY = 0.05
"""Seconds before a publish that lost its channel or node is tried again (doubling, at most 1 s):
a quorum queue's new leader serves 0.25-0.5 s after the old one died (docs/operations.md)."""


def quorum_arguments(delivery_limit: int) -> dict[str, Any]:
    """A quorum queue's arguments: no ``x-max-priority`` (RabbitMQ 3.x refuses it, 406), and the
    delivery limit as the backstop against a message no consumer survives (0: none)."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if delivery_limit:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


log = structlog.get_logger("taskbroker.queue")


def _closed_error(reason: BaseException | None) -> TaskbrokerError:
    if isinstance(reason, ChannelClosedByBroker) and reason.reply_code == NOT_FOUND:
        if "home node" in reason.reply_text:
            # RabbitMQ answers a classic queue whose node is down with a 404 too; registering
            # again would not help, waiting for the node does.
            return QueueUnavailable(
                f"the queue's RabbitMQ node is down ({reason.reply_text}): its tasks wait there "
                "until the node is back; retry later"
            )
        return QueueMissing(
            f"queue does not exist ({reason.reply_text}): register the scheduler to declare it"
        )
    error = BrokerUnavailable(f"RabbitMQ channel closed: {reason!r}")
    error.__cause__ = reason  # declare() tells an argument mismatch (406) from an outage by it
    return error


def require_pika_frame_hook() -> None:
    """Refuse to start, naming pika's version, if pika no longer sends its frames through the
    private hook _CoalescingConnection extends (pika is bounded below its next minor in
    pyproject.toml)."""
    hook = getattr(BaseConnection, "_adapter_emit_data", None)
    if not callable(hook) or "self._transport" not in inspect.getsource(hook):
        raise IncompatibleLibrary(
            "pika",
            pika.__version__,
            "no longer writes its frames in BaseConnection._adapter_emit_data to self._transport",
            "send the frames of one event-loop turn in one write",
        )


class _CoalescingConnection(AsyncioConnection):  # type: ignore[misc]
    """pika queues every frame as its own chunk and sends the chunks one by one: three system
    calls per published message (method, header, body), each a trip through the loopback TCP
    stack. Frames emitted in one event-loop turn are joined into one chunk, so a turn's publishes
    leave in one send; their order, and so the channel's delivery tags, are unchanged.

    pika's private ``_adapter_emit_data`` (every frame passes there) and ``_transport`` (None
    once the connection is lost) are what this extends; ``require_pika_frame_hook`` checks them
    when a broker is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outgoing: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outgoing:
            self.ioloop.call_soon(self._emit_outgoing)
        self._outgoing.append(data)

    def _emit_outgoing(self) -> None:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self._transport is not None:  # the connection was lost meanwhile: pika drops it too
            super()._adapter_emit_data(data)


class _Refused(BrokerUnavailable):
    """RabbitMQ nacked a message: on a quorum queue, the channel's view of a leader that died.
    The channel keeps nacking that queue's messages, so its publishes move to a new channel."""


class _ConfirmTimeout(Exception):
    """A message RabbitMQ did not confirm in time; publish() reports how many as BrokerUnavailable."""


class _ConfirmTracker:
    """Matches publisher confirms to the futures of the messages they confirm.

    RabbitMQ numbers a confirm-mode channel's messages 1, 2, 3...; an ack or nack may confirm
    every message up to its tag at once (``multiple``). Pending tags sit in a dict in ascending
    order, so settling a multiple ack pops from the front. Their deadlines ascend with them, so
    one timer, armed for the oldest, fails the messages not confirmed in time (a timer per
    publish cost more than the rest of the wait).

    A message RabbitMQ returns (mandatory, no queue to route to) comes back before its confirm,
    known by its queue and body: the returns of each are counted, and that many of the messages
    in flight with that queue and body fail as missing their queue. Such messages are alike, so
    which of them fails does not matter. No per-message property is needed to tell messages
    apart: a ``message_id`` cost RabbitMQ a tenth more work per message (bench.rabbitmq_floor).
    """

    def __init__(self, channel: Channel, confirm_timeout: float) -> None:
        self.channel = channel
        self._confirm_timeout = confirm_timeout
        self._tags = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[None], float, tuple[str, bytes]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._returned: collections.Counter[tuple[str, bytes]] = collections.Counter()
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_close)

    def publish(self, queue: str, body: bytes, priority: int = 0) -> asyncio.Future[None]:
        tag = next(self._tags)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self._confirm_timeout
        self._pending[tag] = (future, deadline, (queue, body))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        self.channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=PERSISTENT, priority=priority or None),
            mandatory=True,
        )
        return future

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = list(itertools.takewhile(lambda t: self._pending[t][1] <= now, self._pending))
        for tag in expired:
            future, _, _ = self._pending.pop(tag)
            if not future.done():
                future.set_exception(
                    _ConfirmTimeout("RabbitMQ did not confirm a message in time: retry later")
                )
        self._timer = None
        if self._pending:
            _, oldest, _ = next(iter(self._pending.values()))
            self._timer = loop.call_at(oldest, self._expire)

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        settled = (
            list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._pending))
            if method.multiple
            else [method.delivery_tag]
        )
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for tag in settled:
            future, _, message = self._pending.pop(tag, (None, 0.0, ("", b"")))
            returned = self._returned[message] > 0
            if returned:
                self._returned[message] -= 1
                if not self._returned[message]:
                    del self._returned[message]
            if future is None or future.done():
                continue
            if nacked:
                future.set_exception(_Refused("RabbitMQ refused the message (nack): retry later"))
            elif returned:
                future.set_exception(
                    QueueMissing("the queue is missing: register the scheduler again to declare it")
                )
            else:
                future.set_result(None)
        if not self._pending:
            # Nothing in flight: a return still counted belongs to a message given up on (past
            # its confirm timeout), and must not fail a later copy of that task's message.
            self._returned.clear()

    def _on_return(self, _channel: Channel, method: Any, _properties: Any, body: bytes) -> None:
        self._returned[(method.routing_key, body)] += 1

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        error = BrokerUnavailable(f"RabbitMQ closed the publishing channel before confirming: {reason!r}")
        for future, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _confirm_outcomes(confirms: list[asyncio.Future[None]]) -> list[BaseException | None] | None:
    """Each message's error (None where confirmed) once every one is settled, or None if all
    were confirmed (one message, the usual one-task request, is awaited as is: gathering costs
    more than the rest of the wait)."""
    if len(confirms) == 1:
        try:
            await confirms[0]
        except Exception as exc:  # returned, as gather(return_exceptions=True) does
            return [exc]
        return None
    outcomes = await asyncio.gather(*confirms, return_exceptions=True)
    if not any(isinstance(o, BaseException) for o in outcomes):
        return None
    return [o if isinstance(o, BaseException) else None for o in outcomes]


def _incompatible(queue: str, reply_text: str, queue_type: QueueType) -> str:
    """What an operator does about a queue RabbitMQ holds with other arguments than ours
    (RabbitMQ names the first argument that differs)."""
    delivery_limit = "x-delivery-limit" in reply_text
    if "x-queue-type" in reply_text or (queue_type is QueueType.QUORUM and not delivery_limit):
        return (
            f"queue {queue!r} exists as another queue type (RabbitMQ: {reply_text}): a queue's type "
            "cannot change; register the scheduler with the queue's type, or drain the queue, "
            f"delete it (rabbitmqctl delete_queue {queue}) and register again"
        )
    if delivery_limit:
        return (
            f"quorum queue {queue!r} exists with another delivery limit (RabbitMQ: {reply_text}): set "
            "TASKBROKER_QUORUM_DELIVERY_LIMIT back, or change the queue's limit with a RabbitMQ policy "
            "(delivery-limit) and keep the setting at the queue's declared value"
        )
    return (
        f"queue {queue!r} exists without priorities (x-max-priority {MAX_PRIORITY}), "
        "declared by an older taskbroker: its tasks still run, but to register the "
        "scheduler again drain the queue (stop publishing, let consumers empty it), "
        f"delete it (rabbitmqctl delete_queue {queue}) and register again"
    )


class _AmqpDelivery(Delivery):
    __slots__ = ("_acks", "_tag", "body", "redelivered")

    def __init__(self, acks: AckBatcher, tag: int, body: bytes, redelivered: bool) -> None:
        self._acks = acks
        self._tag = tag
        self.body = body
        self.redelivered = redelivered

    def ack(self) -> None:
        self._acks.ack(self._tag)

    def requeue(self) -> None:
        self._acks.requeue(self._tag)


def _loss_of(reason: BaseException) -> SubscriptionLoss:
    """What closed a consumer's channel: pika closes a lost connection's channels with the
    connection's error as their reason, so anything but a channel error is the connection."""
    if isinstance(reason, ChannelClosedByBroker):
        return SubscriptionLoss(LossCause.CHANNEL_CLOSED, f"{reason.reply_code} {reason.reply_text}")
    if isinstance(reason, ChannelClosed):
        return SubscriptionLoss(LossCause.CHANNEL_CLOSED, repr(reason))
    return SubscriptionLoss(LossCause.CONNECTION_LOST, repr(reason))


class _AmqpSubscription(Subscription):
    def __init__(self, channel: Channel, acks: AckBatcher) -> None:
        self._channel = channel
        self._acks = acks
        self._lost = asyncio.Event()
        self._loss: SubscriptionLoss | None = None
        self._cancelled = False
        self._closed = asyncio.Event()
        channel.add_on_close_callback(self._on_close)
        channel.add_on_cancel_callback(self._on_broker_cancel)

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    @property
    def loss(self) -> SubscriptionLoss | None:
        return self._loss

    def _lose(self, loss: SubscriptionLoss) -> None:
        if self._loss is None and not self._cancelled:
            self._loss = loss
            self._lost.set()

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        self._closed.set()
        self._lose(_loss_of(reason))

    def _on_broker_cancel(self, _frame: Any) -> None:
        # RabbitMQ's basic.cancel (queue deleted, its node down, a quorum queue's member moved)
        # stops deliveries but leaves the channel open, holding this consumer's unacked
        # deliveries. Closing it hands them back to the queue if it still exists, and makes any
        # later ack of theirs a no-op, as after any other loss. Acks already made leave first.
        self._lose(
            SubscriptionLoss(
                LossCause.CANCELLED_BY_BROKER,
                "RabbitMQ cancelled the consumer: its queue was deleted, or its node is down or moved",
            )
        )
        if self._channel.is_open:
            self._acks.flush()
            self._channel.close()

    async def cancel(self) -> None:
        # Closing the channel hands every unacked delivery back to the queue in one step.
        self._cancelled = True
        if self._channel.is_open:
            self._acks.flush()  # acks of this loop turn leave before the channel closes
            self._channel.close()
            try:
                await asyncio.wait_for(self._closed.wait(), timeout=10)
            except TimeoutError:
                return


class AmqpBroker(QueueBroker):
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        connection_name: str = "taskbroker",
        connect_timeout: float = 5.0,
        confirm_timeout: float = 15.0,
        delivery_limit: int = 0,
    ) -> None:
        """``urls``: one node's URL, or a cluster's nodes. They are tried from a random one
        on, so the processes of a deployment spread over the nodes (one node's loss then moves
        a share of them, not all) rather than all piling onto the first."""
        require_pika_frame_hook()
        self._nodes = [
            self._node_parameters(u, connection_name, connect_timeout)
            for u in ([urls] if isinstance(urls, str) else urls)
        ]
        if not self._nodes:
            raise ValueError("AmqpBroker needs at least one RabbitMQ URL")
        self._next_node = random.randrange(len(self._nodes))
        self._quorum_arguments = quorum_arguments(delivery_limit)
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._connection: AsyncioConnection | None = None
        self._publisher: _ConfirmTracker | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def _node_parameters(url: str, connection_name: str, connect_timeout: float) -> pika.URLParameters:
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1  # the next node is the retry
        parameters.socket_timeout = connect_timeout
        parameters.client_properties = {"connection_name": connection_name}
        return parameters

    async def connect(self) -> None:
        await self._open_connection()

    async def close(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None and connection.is_open:
            closed = asyncio.Event()
            connection.add_on_close_callback(lambda _c, _r: closed.set())
            connection.close()
            try:
                await asyncio.wait_for(closed.wait(), timeout=5)
            except TimeoutError:
                return

    async def ping(self) -> None:
        await self._open_connection()

    async def _open_connection(self) -> AsyncioConnection:
        if self._connection is not None and self._connection.is_open:
            return self._connection
        async with self._lock:
            if self._connection is not None and self._connection.is_open:
                return self._connection
            error: BrokerUnavailable | None = None
            for _ in self._nodes:  # each node once, from the next one on
                parameters = self._nodes[self._next_node]
                try:
                    self._connection = await self._connect_to(parameters)
                    return self._connection
                except BrokerUnavailable as exc:
                    error = exc
                    self._next_node = (self._next_node + 1) % len(self._nodes)
            assert error is not None
            if len(self._nodes) > 1:
                raise BrokerUnavailable(
                    f"none of the {len(self._nodes)} RabbitMQ nodes answered; last: {error}"
                )
            raise error

    async def _connect_to(self, parameters: pika.URLParameters) -> AsyncioConnection:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()

        def on_open(connection: Any) -> None:
            if not opened.done():
                opened.set_result(connection)

        def on_open_error(_connection: Any, error: BaseException) -> None:
            if not opened.done():
                opened.set_exception(BrokerUnavailable(f"RabbitMQ is unreachable: {error!r}"))

        connection = _CoalescingConnection(
            parameters,
            on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=loop,
        )
        try:
            return await asyncio.wait_for(opened, timeout=self._connect_timeout)
        except TimeoutError as exc:
            connection.close() if connection.is_open else None
            raise BrokerUnavailable("RabbitMQ did not answer in time: is it running?") from exc

    def _on_connection_closed(self, connection: Any, _reason: BaseException) -> None:
        if connection is self._connection:
            self._connection = None
            self._publisher = None
            # The next connection starts at the next node: this one just failed us (or an
            # operator closed us, which moving on also honours).
            self._next_node = (self._next_node + 1) % len(self._nodes)

    async def _open_channel(self) -> Channel:
        connection = await self._open_connection()
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

        def on_open(channel: Channel) -> None:
            if not opened.done():
                opened.set_result(channel)

        try:
            connection.channel(on_open_callback=on_open)
            return await asyncio.wait_for(opened, timeout=self._connect_timeout)
        except (AMQPError, TimeoutError) as exc:
            raise BrokerUnavailable(f"could not open a RabbitMQ channel: {exc!r}") from exc

    async def _call(self, operation: Callable[[Channel, Callable[[Any], None]], None]) -> Any:
        """Run one synchronous AMQP method on a short-lived channel and return its reply frame."""
        channel = await self._open_channel()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_close(_channel: Channel, reason: BaseException) -> None:
            if not reply.done():
                reply.set_exception(_closed_error(reason))

        def on_reply(frame: Any) -> None:
            if not reply.done():
                reply.set_result(frame)

        channel.add_on_close_callback(on_close)
        try:
            operation(channel, on_reply)
            return await asyncio.wait_for(reply, timeout=self._connect_timeout)
        except AMQPError as exc:
            raise BrokerUnavailable(f"RabbitMQ operation failed: {exc!r}") from exc
        except TimeoutError as exc:
            raise BrokerUnavailable("RabbitMQ did not answer in time") from exc
        finally:
            if channel.is_open:
                channel.close()

    async def declare(self, queue: str, queue_type: QueueType = QueueType.CLASSIC) -> None:
        if queue_type is QueueType.QUORUM:
            await self._declare(queue, self._quorum_arguments)
            return
        try:
            await self._declare(queue, QUEUE_ARGUMENTS)
            return
        except QueueIncompatible as exc:
            # RabbitMQ cannot change a queue's arguments; it names the first one that differs.
            if "x-queue-version" not in str(exc.__cause__):
                raise
        await self._declare(queue, VERSION_1_QUEUE_ARGUMENTS)
        log.info(
            "queue.version_1",
            queue=queue,
            hint="declared by an earlier taskbroker: it works as it is; a RabbitMQ policy with "
            "queue-version 2 converts it in place and confirms publishes faster",
        )

    async def _declare(self, queue: str, arguments: dict[str, Any]) -> None:
        try:
            await self._call(
                lambda ch, cb: ch.queue_declare(queue, durable=True, arguments=arguments, callback=cb)
            )
        except BrokerUnavailable as exc:
            reason = exc.__cause__
            if isinstance(reason, ChannelClosedByBroker) and reason.reply_code == PRECONDITION_FAILED:
                queue_type = QueueType.QUORUM if "x-queue-type" in arguments else QueueType.CLASSIC
                raise QueueIncompatible(_incompatible(queue, reason.reply_text, queue_type)) from reason
            raise

    async def delete(self, queue: str) -> None:
        await self._call(lambda ch, cb: ch.queue_delete(queue, callback=cb))

    async def stats(self, queue: str) -> QueueStats:
        frame = await self._call(lambda ch, cb: ch.queue_declare(queue, passive=True, callback=cb))
        return QueueStats(messages=frame.method.message_count, consumers=frame.method.consumer_count)

    async def _publisher_channel(self) -> _ConfirmTracker:
        if self._publisher is not None and self._publisher.channel.is_open:
            return self._publisher
        channel = await self._open_channel()
        selected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracker = _ConfirmTracker(channel, self._confirm_timeout)
        channel.confirm_delivery(tracker.on_confirm, callback=lambda _f: selected.set_result(None))
        try:
            await asyncio.wait_for(selected, timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable("RabbitMQ did not enable publisher confirms in time") from exc
        self._publisher = tracker
        return tracker

    async def publish(
        self, queue: str, bodies: Sequence[bytes], priorities: Sequence[int] | None = None
    ) -> None:
        """Publish and wait for every confirm. A message whose channel or node went away before
        its confirm (a node killed, a quorum queue's leader lost, a nack) is published again,
        through the next node if the connection is gone, until the confirm timeout has passed
        since the call: then BrokerUnavailable. No node to connect to is BrokerUnavailable at
        once. The retry may enqueue a message twice, which the contract allows (a second
        delivery of a claimed task is dropped)."""
        if not bodies:
            return
        messages = list(zip(bodies, priorities or itertools.repeat(0), strict=priorities is not None))
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._confirm_timeout
        delay = PUBLISH_RETRY_DELAY
        first = True
        while True:
            try:
                if first:  # the usual case, awaited as it is: a wait_for would cost a task
                    messages, error = await self._publish_once(queue, messages)
                else:
                    remaining = give_up_at - loop.time()
                    messages, error = await asyncio.wait_for(self._publish_once(queue, messages), remaining)
            except TimeoutError:
                messages, error = messages, _ConfirmTimeout("no confirm before the deadline")
            except BrokerUnavailable:
                # No channel at all (no node answers): nothing of this round went out, and
                # waiting out the deadline would turn an outage's quick 503 into a hang.
                raise
            if not messages:
                return
            if isinstance(error, QueueMissing):
                raise await self._unroutable(queue) from error
            if isinstance(error, QueueUnavailable):
                raise error
            if isinstance(error, _ConfirmTimeout) or loop.time() + delay >= give_up_at:
                raise BrokerUnavailable(
                    f"RabbitMQ did not confirm {len(messages)} messages in time ({error}): retry later"
                ) from error
            log.info("queue.publish_retry", queue=queue, messages=len(messages), error=str(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            first = False

    def _retire(self, tracker: _ConfirmTracker) -> None:
        """Publish through a new channel from now on; close this one once every message it
        carries is settled (confirmed, refused, or past the confirm timeout)."""
        if self._publisher is tracker:
            self._publisher = None
        channel = tracker.channel
        asyncio.get_running_loop().call_later(
            self._confirm_timeout, lambda: channel.close() if channel.is_open else None
        )

    async def _publish_once(
        self, queue: str, messages: list[tuple[bytes, int]]
    ) -> tuple[list[tuple[bytes, int]], BaseException | None]:
        """Publish once on the current publishing channel: the messages not confirmed, and the
        error that matters most (a return or an outage before a confirm timeout)."""
        tracker = await self._publisher_channel()
        confirms: list[asyncio.Future[None]] = []
        try:
            for body, priority in messages:
                confirms.append(tracker.publish(queue, body, priority))
        except AMQPError as exc:
            for confirm in confirms:
                confirm.cancel()
            return messages, BrokerUnavailable(f"RabbitMQ connection lost while publishing: {exc!r}")
        outcomes = await _confirm_outcomes(confirms)
        if outcomes is None:
            return [], None
        failed = [m for m, o in zip(messages, outcomes, strict=True) if o is not None]
        errors = [o for o in outcomes if o is not None]
        if any(isinstance(e, _Refused) for e in errors):
            self._retire(tracker)
        return failed, next((e for e in errors if not isinstance(e, _ConfirmTimeout)), errors[0])

    async def _unroutable(self, queue: str) -> TaskbrokerError:
        """Why RabbitMQ returned a message: the queue is missing, or (a classic queue) its node
        is down, which a return does not say and a passive declare does."""
        try:
            await self.stats(queue)
        except (QueueMissing, BrokerUnavailable) as exc:
            return exc
        return BrokerUnavailable(
            f"RabbitMQ returned a message for queue {queue!r}, which exists: retry later"
        )

    async def subscribe(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> Subscription:
        channel = await self._open_channel()
        acks = AckBatcher(channel)
        subscription = _AmqpSubscription(channel, acks)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(_channel: Channel, reason: BaseException) -> None:
            if not ready.done():
                ready.set_exception(_closed_error(reason))

        def on_message(_ch: Channel, method: Any, _properties: Any, body: bytes) -> None:
            acks.delivered(method.delivery_tag)
            on_delivery(_AmqpDelivery(acks, method.delivery_tag, body, method.redelivered))

        channel.add_on_close_callback(on_close)
        channel.basic_qos(prefetch_count=prefetch)
        channel.basic_consume(queue, on_message, auto_ack=False, callback=lambda _f: ready.set_result(None))
        try:
            await asyncio.wait_for(ready, timeout=self._connect_timeout)
        except TimeoutError as exc:
            if channel.is_open:  # a consumer that starts later must not take messages unseen
                channel.close()
            raise BrokerUnavailable("RabbitMQ did not start the consumer in time") from exc
        return subscription
