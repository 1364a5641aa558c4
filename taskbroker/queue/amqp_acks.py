"""Acks coalesced per event-loop turn: one basic.ack with multiple=True for a run of settled
deliveries instead of one frame (and one socket write) per message.

Each delivery is still acked only when the consumer calls ``ack`` (after its claim is recorded);
the frame just leaves at the end of the current loop turn. ``multiple=True`` acknowledges every
outstanding tag up to the one named, so it is used only for the oldest run of deliveries that are
all settled; an acked delivery behind one still in flight gets its own frame. Requeues leave at
once, and a channel that closes first hands every unsent ack's message back, as any lost ack does.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pika.channel import Channel


class AckBatcher:
    """The delivery tags of one consumer channel, in the order the broker numbered them."""

    __slots__ = ("_channel", "_flush_scheduled", "_outstanding", "_pending", "_sent")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._outstanding: deque[int] = deque()  # delivered, not yet popped from the front
        self._pending: set[int] = set()  # acked by the consumer, frame not sent yet
        self._sent: set[int] = set()  # settled on the wire out of order (own ack, or a requeue)
        self._flush_scheduled = False

    def delivered(self, tag: int) -> None:
        self._outstanding.append(tag)

    def ack(self, tag: int) -> None:
        self._pending.add(tag)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def requeue(self, tag: int) -> None:
        if self._channel.is_open:
            self._channel.basic_nack(tag, requeue=True)
        self._sent.add(tag)

    def flush(self) -> None:
        """Send this turn's acks: one multiple ack for the settled front, single acks behind it."""
        self._flush_scheduled = False
        if not self._channel.is_open:
            self._pending.clear()
            return
        outstanding, pending, sent = self._outstanding, self._pending, self._sent
        last_pending: int | None = None
        while outstanding:
            tag = outstanding[0]
            if tag in pending:
                pending.discard(tag)
                last_pending = tag
            elif tag in sent:
                sent.discard(tag)
            else:
                break
            outstanding.popleft()
        if last_pending is not None:
            self._channel.basic_ack(last_pending, multiple=True)
        for tag in pending:
            self._channel.basic_ack(tag)
        sent.update(pending)
        pending.clear()
