"""A minimal HTTP/1.1 keep-alive load generator on asyncio streams.

httpx spends ~4 ms of CPU per request with 32 connections here (its pool bookkeeping), more than
the API it drives, so on a 2-core machine it measured the client, not the server. This sends one
prebuilt request per connection at a time and reads just enough of the answer (status line,
Content-Length) to know it arrived: a few tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson


class RequestFailed(RuntimeError):
    pass


def build_post(url: str, path: str, body: object, token: str) -> bytes:
    """The bytes of one POST request, built once and sent many times."""
    netloc = urlsplit(url).netloc
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class Connection:
    """One keep-alive connection; ``send`` returns the status once the whole answer is read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self._reader.readexactly(length)
        return status

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def expect_created(connection: Connection, request: bytes) -> None:
    status = await connection.send(request)
    if status != 201:
        raise RequestFailed(f"the API answered {status}, not 201")
