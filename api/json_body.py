"""Endpoints that take a JSON body refuse any other: 415 for a body not declared as JSON, 400 for
one that is not UTF-8.

FastAPI alone reads an undeclared or ``text/plain`` body as a string and answers a 422 about "a
valid dictionary", and decodes JSON with the standard library, which guesses UTF-16 and UTF-32
from the bytes: a client's encoding mistake was accepted silently. JSON text is UTF-8 (RFC 8259).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

EXPECTED = "send the body as JSON with the header 'Content-Type: application/json'"


def is_json_media_type(content_type: str) -> bool:
    """application/json or any ``+json`` type, whose charset (if given) is UTF-8."""
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    kind, _, subtype = media_type.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    charsets = [
        value.strip('"') for name, _, value in (p.partition("=") for p in parameters) if name == "charset"
    ]
    return all(charset in ("utf-8", "utf8") for charset in charsets)


def check_json_body(content_type: str | None, body: bytes) -> None:
    """415 unless the body is declared as UTF-8 JSON; 400 unless its bytes are UTF-8. A missing
    body without a type passes: the endpoint's validation says the body is required."""
    if content_type is None:
        if body:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"no Content-Type: {EXPECTED}")
        return
    if not is_json_media_type(content_type):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Content-Type {content_type!r} is not JSON: {EXPECTED}"
        )
    # UTF-8 JSON never holds a NUL byte (it would be escaped), UTF-16 and UTF-32 text always does.
    if b"\x00" in body or not _is_utf8(body):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the body is not UTF-8 text: encode the JSON as UTF-8 (RFC 8259)"
        )


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class JsonBodyRoute(APIRoute):
    """A route that checks a JSON body (check_json_body) before FastAPI reads it; routes without
    a body are served as by APIRoute."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        if self.body_field is None:
            return general

        async def handle(request: Request) -> Response:
            check_json_body(request.headers.get("content-type"), await request.body())
            return await general(request)

        return handle
