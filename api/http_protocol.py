"""uvicorn's httptools protocol, with each connection's writes of one event-loop turn joined.

uvicorn writes a response's head and its body with two ``transport.write`` calls. On an idle
socket each write is its own ``send`` system call and its own TCP segment, so the client wakes
twice per answer and the API pays two trips through the loopback stack. Joined, a one-task
answer leaves in one segment: 14-24% more one-task requests/s (bench/results/history.md).

The join waits for nothing but the end of the current turn (as AMQP frames and log lines do:
taskbroker/queue/amqp.py, taskbroker/logs.py), so a streamed body (server-sent events) still
leaves chunk by chunk, and a ``100 Continue`` still goes before the body it asks for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskbroker.api.http_limits import BoundedHttpToolsProtocol


class TurnJoinedTransport(asyncio.Transport):
    """A socket transport whose writes of one loop turn leave in one write, in order.

    Only writes are deferred; reading, flow control and extra info are the socket's own. Closing
    sends what is queued first (as a transport's close sends its buffer); aborting drops it."""

    __slots__ = ("_loop", "_queued", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._queued: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._queued:
            self._loop.call_soon(self._send_queued)
        self._queued.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _send_queued(self) -> None:
        if not self._queued:
            return  # close() sent them already
        data = b"".join(self._queued)
        self._queued.clear()
        if not self._transport.is_closing():  # the peer left meanwhile: the socket would drop it too
            self._transport.write(data)

    def close(self) -> None:
        self._send_queued()
        self._transport.close()

    def abort(self) -> None:
        self._queued.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._queued))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._send_queued()
        self._transport.write_eof()


class TurnJoinedHttpToolsProtocol(BoundedHttpToolsProtocol):
    """The protocol uvicorn runs (``uvicorn.Config(http=...)``): bounded (api.http_limits),
    writing through a TurnJoinedTransport; flow control still watches the socket itself."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = TurnJoinedTransport(transport, self.loop)
