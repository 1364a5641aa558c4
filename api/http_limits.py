"""uvicorn's httptools protocol, bounded: request headers in size and time, request bodies in
time, idle connections in time.

uvicorn bounds none of these with httptools (its ``h11_max_incomplete_event_size`` is h11's
only), and its keep-alive timer starts only after a first response. So a client could send a
64 MiB header, or hold thousands of connections open with a request it never finishes or never
starts. Here:

- the request line and headers may take ``max_header_bytes`` (431 beyond, and the connection
  closes), counted as httptools hands them over and, for a header line it still buffers, as the
  bytes arrive;
- they must arrive within ``header_timeout`` of the request's first bytes (408, closed);
- the body must arrive within ``body_timeout`` of the headers' end (closed: the app sees the
  client leave);
- a connection without a request in flight closes after ``keep_alive_timeout``, from the start
  too (uvicorn's ``timeout_keep_alive``).

Clock and counters are only armed when a read leaves a request unfinished, so the common request
that arrives in one read costs no timer. uvicorn's protocol is used through the parser callbacks
and methods that it is built from (``require_uvicorn_protocol`` checks them at startup; the
uvicorn version is bounded in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import http
import inspect
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from taskbroker.errors import IncompatibleLibrary
from taskbroker.settings import Settings

RELIED_ON = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "send_400_response",
    "timeout_keep_alive_handler",
)
"""The methods of uvicorn's HttpToolsProtocol that BoundedHttpToolsProtocol extends."""

PROTOCOL_ATTRIBUTES = (
    "transport",
    "loop",
    "cycle",
    "flow",
    "server_state",
    "timeout_keep_alive",
    "timeout_keep_alive_task",
)
"""The attributes of uvicorn's HttpToolsProtocol that BoundedHttpToolsProtocol reads or sets;
with the cycle's ``response_complete``, the flow control's ``read_paused`` and the server
state's ``default_headers``."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a connection may take; docs/configuration.md documents each."""

    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            keep_alive_timeout=settings.http_keep_alive_timeout,
        )


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config carrying the HttpLimits its protocol enforces."""

    def __init__(self, app: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(app, timeout_keep_alive=limits.keep_alive_timeout, **kwargs)  # type: ignore[arg-type]
        self.limits = limits


def require_uvicorn_protocol() -> None:
    """Refuse to start, naming uvicorn's version, if its httptools protocol no longer has what
    the limits extend. The protocol's attributes are set per connection,
    so they are looked for where uvicorn's module sets them (``self.<name> =``)."""
    missing = [f"{name}()" for name in RELIED_ON if not callable(getattr(HttpToolsProtocol, name, None))]
    source = inspect.getsource(httptools_impl)
    missing += [name for name in PROTOCOL_ATTRIBUTES if f"self.{name} =" not in source]
    if "self.response_complete =" not in source:
        missing.append("RequestResponseCycle.response_complete")
    if not hasattr(FlowControl(asyncio.Transport()), "read_paused"):
        missing.append("FlowControl.read_paused")
    if not hasattr(ServerState(), "default_headers"):
        missing.append("ServerState.default_headers")
    if missing:
        raise IncompatibleLibrary(
            "uvicorn",
            uvicorn.__version__,
            f"has an HttpToolsProtocol without {', '.join(missing)}",
            "bound request headers and slow clients",
        )


class HeadersTooLarge(Exception):
    """Raised in a parser callback: httptools stops parsing, and uvicorn answers the parser
    error through send_400_response, which answers 431 instead."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """The protocol uvicorn runs, with HttpLimits (the config must be a LimitedConfig)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        if not isinstance(config, LimitedConfig):
            raise TypeError("BoundedHttpToolsProtocol needs a LimitedConfig (api.http_limits)")
        super().__init__(config, *args, **kwargs)
        self._limits = config.limits
        self._awaiting_headers = False
        self._awaiting_body = False
        self._requests_begun = 0
        self._header_bytes = 0
        self._headers_overflowed = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle timer after a response only: a silent new connection would stay.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_body:
            self._awaiting_headers = True  # any byte, even a CRLF before the request line
        begun, awaiting = self._requests_begun, self._awaiting_headers
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
            return
        if self._awaiting_headers:
            if awaiting and begun == self._requests_begun:
                # All of this read is header bytes, and httptools may still hold them unseen.
                self._header_bytes += len(data)
                if self._header_bytes > self._limits.max_header_bytes:
                    self._refuse_headers_too_large()
                    return
            self._arm(self._limits.header_timeout, self._headers_too_slow)
        elif self._awaiting_body:
            self._arm(self._limits.body_timeout, self._body_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._requests_begun += 1
        self._awaiting_headers = True
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._awaiting_headers = False
        self._awaiting_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_overflowed:
            self._refuse_headers_too_large()
        else:
            super().send_400_response(msg)

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.max_header_bytes:
            self._headers_overflowed = True
            raise HeadersTooLarge

    def _arm(self, seconds: float, expire: Any) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(seconds, expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle:  # no response of an earlier pipelined request is being written
            self._answer_and_close(
                408, f"request headers not received within {self._limits.header_timeout} s"
            )
        else:
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.flow.read_paused:  # the server stopped reading, not the client sending
            self._arm(self._limits.body_timeout, self._body_too_slow)
            return
        self.transport.close()  # the app is running: it sees the client leave

    def _refuse_headers_too_large(self) -> None:
        self._disarm()
        self._answer_and_close(
            431, f"request line and headers over {self._limits.max_header_bytes} bytes: send smaller headers"
        )

    def _answer_and_close(self, status: int, detail: str) -> None:
        body = orjson.dumps({"detail": detail})
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
