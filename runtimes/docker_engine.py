"""A small async client for the Docker Engine HTTP API, the part the Docker runtime uses.

Why raw HTTP through httpx rather than the ``docker`` SDK: the SDK is synchronous (requests), so
every container wait would hold a thread for hours; httpx is already a dependency, speaks HTTP over
a unix socket (``AsyncHTTPTransport(uds=...)``) and keeps the runtime on the consumer's event loop.
The API path is pinned to v1.41, which both Docker and podman's compatible service answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

API_VERSION = "v1.41"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
CALL_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Ordinary calls: an engine that does not answer within this fails the attempt, never hangs it."""
PULL_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
WAIT_TIMEOUT = httpx.Timeout(None, connect=5.0)
"""Waiting for a container to exit may take as long as the task runs."""
REMOVE_ATTEMPTS = 4
"""A force-remove refused while the container stops is tried again this many times in all."""
POOL_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)
"""Unbounded: every running task holds one connection in its wait, whatever the concurrency."""


class EngineError(Exception):
    """The engine was unreachable or refused a call; the message says which call and why."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(EngineError):
    """The container or image does not exist (HTTP 404)."""


class Conflict(EngineError):
    """The engine refused because of the object's state or name (HTTP 409)."""


def docker_host(option: str | None) -> str:
    """The engine address: the runtime option, else ``DOCKER_HOST``, else Docker's default socket."""
    return option or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def demultiplex(stream: bytes) -> str:
    """Decode a non-TTY log stream: frames of an 8-byte header (stream type, 3 zero bytes, a
    big-endian length) followed by that many bytes of stdout or stderr, in the order written."""
    chunks: list[bytes] = []
    offset = 0
    while offset + 8 <= len(stream):
        stream_type, length = struct.unpack_from(">BxxxL", stream, offset)
        if stream_type not in (0, 1, 2):
            # Not multiplexed after all (a TTY container): keep the raw bytes.
            return stream.decode("utf-8", errors="replace")
        chunks.append(stream[offset + 8 : offset + 8 + length])
        offset += 8 + length
    return b"".join(chunks).decode("utf-8", errors="replace")


def _transport_and_base(host: str) -> tuple[httpx.AsyncHTTPTransport, str]:
    parts = urlsplit(host)
    if parts.scheme == "unix":
        return httpx.AsyncHTTPTransport(uds=parts.path, limits=POOL_LIMITS), f"http://docker/{API_VERSION}"
    if parts.scheme in ("tcp", "http"):
        return httpx.AsyncHTTPTransport(limits=POOL_LIMITS), f"http://{parts.netloc}/{API_VERSION}"
    if parts.scheme == "https":
        return httpx.AsyncHTTPTransport(limits=POOL_LIMITS), f"https://{parts.netloc}/{API_VERSION}"
    raise ValueError(
        f"unsupported Docker host {host!r}: use unix://PATH, tcp://HOST:PORT or https://HOST:PORT"
    )


@dataclass(frozen=True)
class ContainerSummary:
    id: str
    name: str
    labels: dict[str, str]
    state: str


class DockerEngine:
    """One connection pool to one engine. Every method raises EngineError (or NotFound, Conflict)
    with the call and the engine's own message, so a failed attempt says what went wrong."""

    def __init__(self, host: str) -> None:
        self.host = host
        transport, base = _transport_and_base(host)
        self._client = httpx.AsyncClient(transport=transport, base_url=base, timeout=CALL_TIMEOUT)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        limits: httpx.Timeout = CALL_TIMEOUT,
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method,
                path,
                params=params,
                content=None if json is None else orjson.dumps(json),
                headers={"Content-Type": "application/json"} if json is not None else None,
                timeout=limits,
            )
        except httpx.TransportError as exc:
            raise EngineError(
                f"{what}: container engine at {self.host} is unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        if response.status_code < 400:
            return response
        try:
            message = str(response.json().get("message", response.text))
        except ValueError:
            message = response.text
        error = f"{what}: engine answered {response.status_code}: {message.strip()}"
        if response.status_code == 404:
            raise NotFound(error, status=404)
        if response.status_code == 409:
            raise Conflict(error, status=409)
        raise EngineError(error, status=response.status_code)

    async def ping(self) -> None:
        await self._call("GET", "/_ping", what="ping")

    async def image_exists(self, image: str) -> bool:
        try:
            await self._call("GET", f"/images/{image}/json", what=f"inspect image {image}")
        except NotFound:
            return False
        return True

    async def pull(self, image: str) -> None:
        """Pull ``image``; the engine streams JSON progress lines and reports failure in one of
        them with status 200, so each line is read for an ``error``."""
        name, tag = _split_tag(image)
        response = await self._call(
            "POST",
            "/images/create",
            what=f"pull {image}",
            params={"fromImage": name, "tag": tag},
            limits=PULL_TIMEOUT,
        )
        for line in response.text.splitlines():
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("error"):
                raise EngineError(f"pull {image}: {event['error']}")

    async def create(self, name: str, body: dict[str, Any]) -> str:
        response = await self._call(
            "POST", "/containers/create", what=f"create container {name}", params={"name": name}, json=body
        )
        return str(response.json()["Id"])

    async def start(self, name: str) -> None:
        await self._call("POST", f"/containers/{name}/start", what=f"start container {name}")

    async def wait(self, name: str) -> int:
        """Block until the container is not running; its exit code."""
        response = await self._call(
            "POST", f"/containers/{name}/wait", what=f"wait for container {name}", limits=WAIT_TIMEOUT
        )
        body = response.json()
        error = (body.get("Error") or {}).get("Message") if isinstance(body.get("Error"), dict) else None
        if error:
            raise EngineError(f"wait for container {name}: {error}")
        return int(body["StatusCode"])

    async def logs(self, name: str, *, tail: int) -> str:
        response = await self._call(
            "GET",
            f"/containers/{name}/logs",
            what=f"read logs of container {name}",
            params={"stdout": "1", "stderr": "1", "tail": str(tail)},
        )
        return demultiplex(response.content)

    async def kill(self, name: str) -> None:
        """SIGKILL the container; a container that is gone or not running is left as it is."""
        with contextlib.suppress(NotFound, Conflict):
            await self._call(
                "POST", f"/containers/{name}/kill", what=f"kill container {name}", params={"signal": "KILL"}
            )

    async def remove(self, name: str) -> None:
        """Force-remove (killing it if it runs) with its anonymous volumes; gone already is fine.

        A force-remove that races the container's own exit (just killed, say) can be refused by
        the engine (podman: 500 "could not be stopped ... container state improper"; Docker: 409
        while a removal is under way): the container has stopped a moment later, so the remove
        is tried again, a few times, before the error is the caller's."""
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                with contextlib.suppress(NotFound):
                    await self._call(
                        "DELETE",
                        f"/containers/{name}",
                        what=f"remove container {name}",
                        params={"force": "1", "v": "1"},
                    )
                return
            except EngineError as exc:
                if exc.status not in (409, 500) or attempt == REMOVE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    async def exists(self, name: str) -> bool:
        try:
            await self._call("GET", f"/containers/{name}/json", what=f"inspect container {name}")
        except NotFound:
            return False
        return True

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerSummary]:
        """Every container (running or exited) carrying all of ``labels``."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        response = await self._call(
            "GET",
            "/containers/json",
            what="list containers",
            params={"all": "1", "filters": orjson.dumps(filters).decode()},
        )
        return [
            ContainerSummary(
                id=str(item["Id"]),
                name=str((item.get("Names") or [""])[0]).lstrip("/"),
                labels={str(k): str(v) for k, v in (item.get("Labels") or {}).items()},
                state=str(item.get("State", "")),
            )
            for item in response.json()
        ]


def _split_tag(image: str) -> tuple[str, str]:
    """``registry:5000/repo:tag`` -> (``registry:5000/repo``, ``tag``); a digest or no tag keeps
    the whole reference with ``latest`` only when there is no tag at all."""
    if "@" in image:
        return image, ""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag
