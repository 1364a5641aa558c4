"""The server our processes run (draining_server), over real sockets: nothing a client waits for
is delayed (streams, 100 Continue, closes, pipelined requests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from taskbroker.api.server import DrainingServer, draining_server
from tests.support.live_api import serving

ANSWER = {"id": "d9b2d63d-a89c-4dff-9ad7-b09a9a2ed5f6", "state": "pending"}


def make_app(release_stream: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.post("/task")
    async def task() -> JSONResponse:
        return JSONResponse(ANSWER, status_code=201)

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": (await request.body()).decode()})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await release_stream.wait()  # the client must have read the first chunk by now
            yield b"data: second\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@asynccontextmanager
async def serving_app(app: FastAPI) -> AsyncIterator[int]:
    """Serves ``app`` with draining_server on a free port (yielded)."""
    server: DrainingServer = draining_server(app, host="127.0.0.1", port=0)
    server.config.timeout_graceful_shutdown = 5  # a failed test's open connections end the run
    async with serving(server):
        yield server.servers[0].sockets[0].getsockname()[1]


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line[15:]) for line in lines if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving_app(make_app(asyncio.Event())) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo", b"one") + post("/echo", b"two") + post("/task", b"{}"))
        async with asyncio.timeout(10):
            answers = [await read_answer(reader) for _ in range(3)]
        writer.close()
    assert [body for _, body in answers] == [b'{"body":"one"}', b'{"body":"two"}', answers[2][1]]
    assert answers[2][0].startswith(b"HTTP/1.1 201 ")


async def test_a_stream_is_not_held_back_until_it_ends() -> None:
    release = asyncio.Event()
    async with serving_app(make_app(release)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        async with asyncio.timeout(10):
            await reader.readuntil(b"\r\n\r\n")
            first = await reader.readuntil(b"data: first\n\n")
            release.set()
            second = await reader.readuntil(b"data: second\n\n")
        writer.close()
    assert first.endswith(b"data: first\n\n")
    assert second.endswith(b"data: second\n\n")


async def test_100_continue_goes_before_the_body_it_asks_for() -> None:
    async with serving_app(make_app(asyncio.Event())) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo", b"", "Expect: 100-continue").replace(b"Length: 0", b"Length: 5"))
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"hello")
            head, body = await read_answer(reader)
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b'{"body":"hello"}'


@pytest.mark.parametrize(
    ("request_bytes", "status", "ending"),
    [
        (post("/echo", b"bye", "Connection: close"), b"HTTP/1.1 200 ", b'{"body":"bye"}'),
        (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 400 ", b"Invalid HTTP request received."),
    ],
    ids=["connection-close", "malformed-request"],
)
async def test_an_answer_before_a_close_arrives_whole(
    request_bytes: bytes, status: bytes, ending: bytes
) -> None:
    async with serving_app(make_app(asyncio.Event())) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        async with asyncio.timeout(10):
            received = await reader.read()  # to the end of the stream: the server closed it
        writer.close()
    assert received.startswith(status)
    assert received.endswith(ending)
