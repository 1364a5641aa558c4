"""Lua script calls made in the same event-loop turn leave for Redis in one write.

A worker claims, renews and finishes many tasks at once, and an API serves many requests at
once; sent one by one, each script call costs its own socket write and its own wait. Batching
what one loop turn asks for keeps each script atomic and in the order it was called (EVALSHAs
without MULTI run one after the other), and changes no caller: each gets the reply or the error
its own call would have produced.

The batch goes out on one connection (kept between batches) as hiredis-packed EVALSHAs, and
its replies are read under one timeout: the same wire traffic as a redis-py pipeline, without
its per-command Python packing, per-reply timeout contexts and pool round trip (41 -> 17 us of
client CPU per call in batches of 7; a third of a worker's CPU per task went there).

That takes redis-py's connection layer below its client: a pool's ``get_connection()`` and
``release()``, a connection's ``send_packed_command``, ``read_response(timeout=)``,
``disconnect(nowait=)``, ``retry`` and ``socket_timeout``. ``require_redis_connection_api``
checks them when the first ScriptCalls is built (at startup), and redis is bounded below its
next major in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from typing import Any

import hiredis
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskbroker.errors import IncompatibleLibrary

_Call = tuple[AsyncScript, list[Any], asyncio.Future[Any]]

CONNECTION_CALLS = {
    "send_packed_command": ("command",),
    "read_response": ("timeout",),
    "disconnect": ("nowait",),
}
"""The methods of redis-py's AbstractConnection ScriptCalls calls, and the parameters it passes."""
CONNECTION_ATTRIBUTES = ("socket_timeout", "retry")
"""The attributes of a connection ScriptCalls reads, set from AbstractConnection's parameters."""


@functools.cache
def require_redis_connection_api() -> None:
    """Refuse to start, naming redis-py's version, if its connection layer lacks what ScriptCalls
    uses. Cached: the library does not change while the process runs."""
    missing = [
        f"AbstractConnection.{name}({', '.join(params)})"
        for name, params in CONNECTION_CALLS.items()
        if not _takes(getattr(AbstractConnection, name, None), params)
    ]
    missing += [
        f"ConnectionPool.{name}()"
        for name in ("get_connection", "release")
        if not callable(getattr(ConnectionPool, name, None))
    ]
    if not _callable_without_arguments(getattr(ConnectionPool, "get_connection", None)):
        missing.append("ConnectionPool.get_connection() without a command name")
    init = inspect.signature(AbstractConnection.__init__).parameters
    missing += [f"AbstractConnection({name}=...)" for name in CONNECTION_ATTRIBUTES if name not in init]
    if missing:
        raise IncompatibleLibrary(
            "redis-py",
            redis.__version__,
            f"lacks {', '.join(missing)}",
            "send the Lua script calls of one event-loop turn in one write",
        )


def _takes(method: Any, params: tuple[str, ...]) -> bool:
    """Whether ``method`` is a method with parameters of these names."""
    return callable(method) and set(params) <= set(inspect.signature(method).parameters)


def _callable_without_arguments(method: Any) -> bool:
    if not callable(method):
        return False
    try:
        inspect.signature(method).bind(None)  # self only
    except TypeError:
        return False
    return True


class ScriptCalls:
    """Runs registered scripts for one client; calls of one loop turn share a round trip."""

    def __init__(self, client: Redis) -> None:
        require_redis_connection_api()
        self._client = client
        self._queued: list[_Call] = []
        self._kept: AbstractConnection | None = None
        """A connection kept from one batch to the next: taking one from the pool and giving it
        back cost more CPU than the batch's own replies. A batch sent while another is out
        takes a second one from the pool."""

    def call(self, script: AsyncScript, args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, args, reply))
        return reply

    def _flush(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(calls))
        task.add_done_callback(_retrieve)

    async def _send(self, calls: list[_Call]) -> None:
        # evalsha, not the Script object: a Script first asks Redis whether it knows the script
        # (one more round trip); a NOSCRIPT reply sends that one call again through the Script.
        packed = b"".join(hiredis.pack_command(("EVALSHA", s.sha, 0, *args)) for s, args, _ in calls)
        pool = self._client.connection_pool
        kept, self._kept = self._kept, None
        try:
            connection = kept or await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                # One quick retry on a dropped connection, as the client does for any command.
                results = await connection.retry.call_with_retry(
                    lambda: _exchange(connection, packed, len(calls)),
                    lambda _error: connection.disconnect(),
                )
            except BaseException:
                await pool.release(connection)
                raise
        except BaseException as exc:  # the connection failed: every call fails as it would alone
            for _script, _args, reply in calls:
                _fail(reply, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        await self._keep_or_release(connection)
        for (script, args, reply), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its scripts
                await _settle(reply, _run_one(script, args))
            elif reply.done():
                continue
            elif isinstance(result, BaseException):
                _fail(reply, result)
            else:
                reply.set_result(result)

    async def _keep_or_release(self, connection: AbstractConnection) -> None:
        if self._kept is None:  # another batch may have kept one while this one was out
            self._kept = connection
        else:
            await self._client.connection_pool.release(connection)


async def _exchange(connection: AbstractConnection, packed: bytes, count: int) -> list[Any]:
    """Write the batch, read its ``count`` replies; an error reply is returned, not raised.

    One timeout (the connection's socket timeout) covers all the reads; a timeout or a failure
    part-way leaves the connection disconnected, so no later command reads a stale reply."""
    await connection.send_packed_command(packed)
    replies: list[Any] = []
    try:
        async with asyncio.timeout(connection.socket_timeout):
            for _ in range(count):
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:
                    replies.append(error)
    except TimeoutError:
        await connection.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading script replies from Redis") from None
    return replies


async def _run_one(script: AsyncScript, args: list[Any]) -> Any:
    return await script(keys=[], args=args)  # loads the script if Redis lost it


async def _settle(reply: asyncio.Future[Any], outcome: Any) -> None:
    try:
        value = await outcome
    except BaseException as exc:
        _fail(reply, exc)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    if not reply.done():
        reply.set_result(value)


def _fail(reply: asyncio.Future[Any], exc: BaseException) -> None:
    if reply.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        reply.cancel()
    else:
        reply.set_exception(exc)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
