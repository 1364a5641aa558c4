"""The server our processes run (draining_server) bounds what a connection may take, over real
sockets: headers in size (431) and time (408), bodies in time, idle connections in time. Each
test sets a small limit and awaits the server's close; none measures how long it took."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from taskbroker.api.http_limits import HttpLimits
from taskbroker.api.server import draining_server
from tests.support.live_api import serving

HEADER_LIMIT = 4096
SHORT = 0.2
"""Seconds: short enough that the tests await each close briefly."""
NEVER = 600.0
"""Seconds: a limit no test reaches."""
GIVE_UP = 60.0
"""How long a test awaits a close before failing instead of hanging (not a timing assertion)."""


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"received": len(await request.body())})

    return app


@asynccontextmanager
async def connected(**limits: float) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to a server with these HttpLimits (the others: NEVER, HEADER_LIMIT)."""
    chosen = HttpLimits(
        max_header_bytes=int(limits.pop("max_header_bytes", HEADER_LIMIT)),
        header_timeout=limits.pop("header_timeout", NEVER),
        body_timeout=limits.pop("body_timeout", NEVER),
        keep_alive_timeout=limits.pop("keep_alive_timeout", NEVER),
    )
    server = draining_server(_app(), host="127.0.0.1", port=0, limits=chosen)
    server.config.timeout_graceful_shutdown = 5  # a failed test's open connections end the run
    async with serving(server):
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), GIVE_UP)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send what the server takes; it may close the connection before taking all of it."""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (16 * HEADER_LIMIT) + b"\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: t\r\n" + b"X-Many: a\r\n" * (2 * HEADER_LIMIT // 10) + b"\r\n",
        b"GET /ok?" + b"q" * (2 * HEADER_LIMIT) + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\r\n" * (4 * HEADER_LIMIT),
    ],
    ids=["one long header", "many headers", "a long URL", "blank lines"],
)
async def test_headers_over_the_limit_are_431_and_the_connection_closes(head: bytes) -> None:
    async with connected() as (reader, writer):
        await _send(writer, head)
        answer = await _until_closed(reader)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"detail"' in answer


async def test_headers_within_the_limit_and_a_large_body_are_served() -> None:
    body = b"x" * (64 * HEADER_LIMIT)  # body bytes never count as header bytes
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Fill: " + b"f" * (HEADER_LIMIT - 200) + b"\r\n"
    async with connected() as (reader, writer):
        await _send(writer, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = await _until_closed(reader)

    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.endswith(b'{"received":%d}' % len(body))


async def test_headers_held_unfinished_are_408_and_the_connection_closes() -> None:
    async with connected(header_timeout=SHORT) as (reader, writer):
        await _send(writer, b"GET /ok HTTP/1.1\r\nHost: t\r\n")
        answer = await _until_closed(reader)

    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_body_held_unfinished_closes_the_connection() -> None:
    async with connected(body_timeout=SHORT) as (reader, writer):
        await _send(writer, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        answer = await _until_closed(reader)

    assert b"200 OK" not in answer


async def test_an_idle_keep_alive_connection_closes() -> None:
    async with connected(keep_alive_timeout=SHORT) as (reader, writer):
        await _send(writer, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = await _until_closed(reader)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"ok":true}')


async def test_a_connection_that_never_sends_a_request_closes() -> None:
    async with connected(keep_alive_timeout=SHORT) as (reader, _writer):
        answer = await _until_closed(reader)

    assert answer == b""
