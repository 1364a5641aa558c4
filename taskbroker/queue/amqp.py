"""RabbitMQ through pika's asyncio adapter: durable queues, persistent messages, pipelined
publisher confirms (never a synchronous wait per message) and manual acks."""

from __future__ import annotations

import asyncio
import inspect
import itertools
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
    TaskbrokerError,
)
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

log = structlog.get_logger("taskbroker.queue")


def _closed_error(reason: BaseException | None) -> TaskbrokerError:
    if isinstance(reason, ChannelClosedByBroker) and reason.reply_code == 404:
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


class _ConfirmTimeout(Exception):
    """A message RabbitMQ did not confirm in time; publish() reports how many as BrokerUnavailable."""


class _ConfirmTracker:
    """Matches publisher confirms to the futures of the messages they confirm.

    RabbitMQ numbers a confirm-mode channel's messages 1, 2, 3...; an ack or nack may confirm
    every message up to its tag at once (``multiple``). Pending tags sit in a dict in ascending
    order, so settling a multiple ack pops from the front. Their deadlines ascend with them, so
    one timer, armed for the oldest, fails the messages not confirmed in time (a timer per
    publish cost more than the rest of the wait).
    """

    def __init__(self, channel: Channel, confirm_timeout: float) -> None:
        self.channel = channel
        self._confirm_timeout = confirm_timeout
        self._tags = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[None], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._returned: set[str] = set()
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_close)

    def publish(self, queue: str, body: bytes, priority: int = 0) -> asyncio.Future[None]:
        tag = next(self._tags)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self._confirm_timeout
        self._pending[tag] = (future, deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        self.channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=PERSISTENT, message_id=str(tag), priority=priority or None
            ),
            mandatory=True,
        )
        return future

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = list(itertools.takewhile(lambda t: self._pending[t][1] <= now, self._pending))
        for tag in expired:
            future, _ = self._pending.pop(tag)
            if not future.done():
                future.set_exception(
                    _ConfirmTimeout("RabbitMQ did not confirm a message in time: retry later")
                )
        self._timer = None
        if self._pending:
            _, oldest = next(iter(self._pending.values()))
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
            future, _ = self._pending.pop(tag, (None, 0.0))
            if future is None or future.done():
                continue
            if nacked:
                future.set_exception(BrokerUnavailable("RabbitMQ refused the message (nack): retry later"))
            elif str(tag) in self._returned:
                self._returned.discard(str(tag))
                future.set_exception(
                    QueueMissing("the queue is missing: register the scheduler again to declare it")
                )
            else:
                future.set_result(None)

    def _on_return(self, _channel: Channel, _method: Any, properties: Any, _body: bytes) -> None:
        self._returned.add(properties.message_id)

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        error = BrokerUnavailable(f"RabbitMQ closed the publishing channel before confirming: {reason!r}")
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _confirm_errors(confirms: list[asyncio.Future[None]]) -> list[BaseException]:
    """What went wrong with these messages, once every one is settled (one message, the usual
    one-task request, is awaited as is: gathering costs more than the rest of the wait)."""
    if len(confirms) == 1:
        try:
            await confirms[0]
        except Exception as exc:  # returned, as gather(return_exceptions=True) does
            return [exc]
        return []
    outcomes = await asyncio.gather(*confirms, return_exceptions=True)
    return [o for o in outcomes if isinstance(o, BaseException)]


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
        url: str,
        *,
        connection_name: str = "taskbroker",
        connect_timeout: float = 5.0,
        confirm_timeout: float = 15.0,
    ) -> None:
        require_pika_frame_hook()
        self._parameters = pika.URLParameters(url)
        self._parameters.connection_attempts = 1
        self._parameters.socket_timeout = connect_timeout
        self._parameters.client_properties = {"connection_name": connection_name}
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._connection: AsyncioConnection | None = None
        self._publisher: _ConfirmTracker | None = None
        self._lock = asyncio.Lock()

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
            loop = asyncio.get_running_loop()
            opened: asyncio.Future[AsyncioConnection] = loop.create_future()

            def on_open(connection: Any) -> None:
                if not opened.done():
                    opened.set_result(connection)

            def on_open_error(_connection: Any, error: BaseException) -> None:
                if not opened.done():
                    opened.set_exception(BrokerUnavailable(f"RabbitMQ is unreachable: {error!r}"))

            connection = _CoalescingConnection(
                self._parameters,
                on_open_callback=on_open,
                on_open_error_callback=on_open_error,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=loop,
            )
            try:
                self._connection = await asyncio.wait_for(opened, timeout=self._connect_timeout)
            except TimeoutError as exc:
                connection.close() if connection.is_open else None
                raise BrokerUnavailable("RabbitMQ did not answer in time: is it running?") from exc
            return self._connection

    def _on_connection_closed(self, connection: Any, _reason: BaseException) -> None:
        if connection is self._connection:
            self._connection = None
            self._publisher = None

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

    async def declare(self, queue: str) -> None:
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
                raise QueueIncompatible(
                    f"queue {queue!r} exists without priorities (x-max-priority {MAX_PRIORITY}), "
                    "declared by an older taskbroker: its tasks still run, but to register the "
                    "scheduler again drain the queue (stop publishing, let consumers empty it), "
                    f"delete it (rabbitmqctl delete_queue {queue}) and register again"
                ) from reason
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
        if not bodies:
            return
        tracker = await self._publisher_channel()
        try:
            if priorities is None:
                confirms = [tracker.publish(queue, body) for body in bodies]
            else:
                confirms = [tracker.publish(queue, b, p) for b, p in zip(bodies, priorities, strict=True)]
        except AMQPError as exc:
            raise BrokerUnavailable(f"RabbitMQ connection lost while publishing: {exc!r}") from exc
        errors = await _confirm_errors(confirms)
        late = sum(isinstance(e, _ConfirmTimeout) for e in errors)
        if late < len(errors):
            raise next(e for e in errors if not isinstance(e, _ConfirmTimeout))
        if late:
            raise BrokerUnavailable(f"RabbitMQ did not confirm {late} messages in time: retry later")

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
