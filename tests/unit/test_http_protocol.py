"""TurnJoinedTransport on a real event loop, over a transport that records what reaches it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from taskbroker.api.http_limits import require_uvicorn_protocol
from taskbroker.api.http_protocol import TurnJoinedTransport
from taskbroker.errors import IncompatibleLibrary


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0


async def next_turn() -> None:
    """Lets the callbacks scheduled so far run (call_soon callbacks run in the next turn)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_leave_in_one_write_in_order() -> None:
    socket = RecordingTransport()
    joined = TurnJoinedTransport(socket, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 201 Created\r\n\r\n")
    joined.writelines([b'{"id":', bytearray(b'"1"'), memoryview(b"}")])
    assert socket.writes == []
    assert joined.get_write_buffer_size() == len(b"HTTP/1.1 201 Created\r\n\r\n" + b'{"id":"1"}')
    await next_turn()
    assert socket.writes == [b'HTTP/1.1 201 Created\r\n\r\n{"id":"1"}']


async def test_writes_of_later_turns_are_not_held_back() -> None:
    """A streamed body leaves chunk by chunk: each turn's writes go at the end of that turn."""
    socket = RecordingTransport()
    joined = TurnJoinedTransport(socket, asyncio.get_running_loop())
    joined.write(b"first")
    await next_turn()
    joined.write(b"second")
    await next_turn()
    assert socket.writes == [b"first", b"second"]


async def test_close_sends_what_is_queued_first() -> None:
    socket = RecordingTransport()
    joined = TurnJoinedTransport(socket, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    joined.close()
    assert socket.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n"]
    assert socket.closed
    await next_turn()
    assert socket.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n"], "sent twice"


async def test_abort_drops_what_is_queued() -> None:
    socket = RecordingTransport()
    joined = TurnJoinedTransport(socket, asyncio.get_running_loop())
    joined.write(b"partial")
    joined.abort()
    await next_turn()
    assert socket.aborted
    assert socket.writes == []


async def test_a_socket_closed_meanwhile_gets_nothing() -> None:
    """The peer left before the turn ended: the queued bytes are dropped, as the socket would."""
    socket = RecordingTransport()
    joined = TurnJoinedTransport(socket, asyncio.get_running_loop())
    joined.write(b"answer")
    socket.closed = True
    await next_turn()
    assert socket.writes == []
    assert joined.get_write_buffer_size() == 0


def test_this_uvicorn_has_every_method_the_http_limits_extend() -> None:
    require_uvicorn_protocol()  # raises if one is gone


def test_a_uvicorn_without_one_of_them_fails_at_startup_saying_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "on_header")

    with pytest.raises(IncompatibleLibrary, match="uvicorn .*on_header"):
        require_uvicorn_protocol()
