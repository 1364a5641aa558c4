"""What an outsider throws at a real `taskbroker api` process beyond well-formed requests: a header
far past the limit, hundreds of connections that send half a request and wait, date-times and
numbers outside what can be stored, on every path that takes them, with each token. Every answer
must be a 4xx (never a 5xx, never a 2xx that stored something), every held connection must be
closed by the server, and the process must serve normally afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.hardening.conftest import Deployment
from tests.support.hostile_inputs import DATETIME_FIELDS, FREE_FORM_JSON, NON_FINITE, OVERFLOWING_TIMES

pytestmark = pytest.mark.e2e

HELD_CONNECTIONS = 300
GIVE_UP = 60.0
"""How long a test awaits the server's closes before failing instead of hanging (not a timing assertion)."""


def _host_port(deployment: Deployment) -> tuple[str, int]:
    url = httpx.URL(deployment.url)
    assert url.port is not None
    return url.host, url.port


@pytest.fixture
def admin(deployment: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployment.url, headers=deployment.admin_headers, timeout=30) as http:
        yield http


def _assert_serving(deployment: Deployment) -> None:
    """The process is alive and schedules normally."""
    with httpx.Client(base_url=deployment.url, headers=deployment.client_headers, timeout=30) as http:
        response = http.post(
            "/task/schedule",
            json={"scheduler": "hardening", "attributes": {"function": "taskbroker.runtimes.builtin:noop"}},
        )
    assert response.status_code == 201, response.text


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    return await reader.read()


async def _hold_connections(deployment: Deployment, opening: bytes, count: int) -> list[bytes]:
    """Open ``count`` connections, send each ``opening`` and nothing more, and return what each
    got before the server closed it."""
    host, port = _host_port(deployment)
    connections = [await asyncio.open_connection(host, port) for _ in range(count)]
    try:
        for _, writer in connections:
            writer.write(opening)
        await asyncio.gather(*(writer.drain() for _, writer in connections))
        return await asyncio.wait_for(
            asyncio.gather(*(_closed_by_server(reader) for reader, _ in connections)), GIVE_UP
        )
    finally:
        for _, writer in connections:
            writer.close()


def test_a_header_of_megabytes_is_refused_and_the_connection_closed(deployment: Deployment) -> None:
    """The server answers 431 and closes once the limit is passed; a client still sending then
    usually meets a reset that discards the 431, so what counts is that it was cut off early."""
    megabytes = 64  # as the adversarial run sent

    async def send() -> tuple[int, bytes]:
        host, port = _host_port(deployment)
        reader, writer = await asyncio.open_connection(host, port)
        sent = 0
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(megabytes):
                writer.write(b"a" * (1 << 20))
                await writer.drain()
                sent += 1
            answer = await asyncio.wait_for(reader.read(), GIVE_UP)
        except ConnectionError:
            answer = b""
        finally:
            writer.close()
        return sent, answer

    sent, answer = asyncio.run(send())

    assert sent < megabytes, "the server read a 64 MiB header without closing the connection"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    _assert_serving(deployment)


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"POST /task/schedule HTTP/1.1\r\nHost: x\r\n", id="partial-headers"),
        pytest.param(
            b"POST /task/schedule HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"scheduler": ',
            id="partial-body",
        ),
        pytest.param(b"", id="silent"),
    ],
)
def test_hundreds_of_held_connections_are_all_closed_by_the_server(
    deployment: Deployment, opening: bytes
) -> None:
    answers = asyncio.run(_hold_connections(deployment, opening, HELD_CONNECTIONS))

    assert len(answers) == HELD_CONNECTIONS
    for answer in answers:
        assert answer == b"" or answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), answer[:200]
    _assert_serving(deployment)


def _schedule_id(admin: httpx.Client) -> str:
    response = admin.post(
        "/schedules", json={"name": "abuse-base", "scheduler": "alpha", "cron": "0 1 * * *"}
    )
    if response.status_code == 409:
        found = admin.get("/schedules").json()
        schedules: list[dict[str, Any]] = found["schedules"] if isinstance(found, dict) else found
        return next(str(s["id"]) for s in schedules if s["name"] == "abuse-base")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def alpha(admin: httpx.Client) -> str:
    """The scheduler the hostile-input tables name, and a schedule for their PATCH rows."""
    assert admin.post("/scheduler", json={"name": "alpha"}).status_code in (200, 201)
    return _schedule_id(admin)


@pytest.mark.parametrize("token", ["admin", "client"])
def test_date_times_and_numbers_out_of_range_are_4xx_on_every_path(
    deployment: Deployment, alpha: str, token: str
) -> None:
    headers = deployment.admin_headers if token == "admin" else deployment.client_headers
    answers: list[tuple[str, str, int, str]] = []
    with httpx.Client(base_url=deployment.url, headers=headers, timeout=30) as http:
        for method, path, body, _ in DATETIME_FIELDS:
            for when in OVERFLOWING_TIMES:
                response = http.request(method, path.format(id=alpha), json=body(when))
                answers.append((method, path, response.status_code, response.text[:200]))
        for method, path, template, _ in FREE_FORM_JSON:
            for value in NON_FINITE:
                response = http.request(
                    method,
                    path.format(id=alpha),
                    content=template.replace("VALUE", value),
                    headers={"Content-Type": "application/json"},
                )
                answers.append((method, path, response.status_code, response.text[:200]))

    wrong = [a for a in answers if not 400 <= a[2] < 500]
    assert wrong == [], json.dumps(wrong, indent=1)
    _assert_serving(deployment)
