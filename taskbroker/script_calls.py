"""Lua script calls made in the same event-loop turn leave for Redis in one write.

A worker claims, renews and finishes many tasks at once, and an API serves many requests at
once; sent one by one, each script call costs its own socket write and its own wait. Batching
what one loop turn asks for keeps each script atomic and in the order it was called (EVALSHAs
without MULTI run one after the other), and changes no caller: each gets the reply or the error
its own call would have produced.

A call may ask to be replicated (TASKBROKER_REDIS_MIN_REPLICAS): a batch holding one ends with
``WAIT n timeout`` in the same write, so the batch pays the replicas' wait and no extra round
trip, and each replicated call fails with NotReplicated when fewer replicas confirmed it (WAIT
counts every earlier write of its connection: the batch's own scripts).

The batch goes out on one connection (kept between batches) as hiredis-packed EVALSHAs, and
its replies are read under one timeout: the same wire traffic as a redis-py pipeline, without
its per-command Python packing, per-reply timeout contexts and pool round trip (41 -> 17 us of
client CPU per call in batches of 7; a third of a worker's CPU per task went there).

That takes redis-py's connection layer below its client: a pool's ``get_connection()`` and
``release()``, a connection's ``send_packed_command``, ``read_response(timeout=)``,
``disconnect(nowait=)``, ``connect()``, ``is_connected`` and ``socket_timeout``. A
connection found disconnected is connected through its own ``connect()`` (a Sentinel-managed
one asks the Sentinels for the primary there; the implicit reconnect of
``send_packed_command`` would go back to the address it had, a dead primary after a failover).
``require_redis_connection_api`` checks them when the first ScriptCalls is built (at startup),
and redis is bounded below its next major in pyproject.toml.
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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskbroker.errors import IncompatibleLibrary, NotReplicated

_Call = tuple[AsyncScript, list[Any], asyncio.Future[Any], bool]
"""A script, its arguments, its caller's reply, whether the caller asked for replicas."""

CONNECTION_CALLS = {
    "send_packed_command": ("command",),
    "read_response": ("timeout",),
    "disconnect": ("nowait",),
    "connect": (),
}
"""The methods of redis-py's AbstractConnection ScriptCalls calls, and the parameters it passes."""
CONNECTION_ATTRIBUTES = ("socket_timeout",)
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
    if not isinstance(getattr(AbstractConnection, "is_connected", None), property):
        missing.append("AbstractConnection.is_connected")
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
    """Runs registered scripts for one client; calls of one loop turn share a round trip.

    ``min_replicas`` > 0: a call made with ``replicated=True`` answers only once that many
    replicas have it (within ``replicas_timeout_ms``), else raises NotReplicated."""

    def __init__(self, client: Redis, *, min_replicas: int = 0, replicas_timeout_ms: int = 1000) -> None:
        require_redis_connection_api()
        self._client = client
        self._min_replicas = min_replicas
        self._replicas_timeout_ms = replicas_timeout_ms
        self._queued: list[_Call] = []
        self._kept: AbstractConnection | None = None
        """A connection kept from one batch to the next: taking one from the pool and giving it
        back cost more CPU than the batch's own replies. A batch sent while another is out
        takes a second one from the pool."""

    @property
    def min_replicas(self) -> int:
        return self._min_replicas

    def call(self, script: AsyncScript, args: list[Any], *, replicated: bool = False) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, args, reply, replicated and self._min_replicas > 0))
        return reply

    def _flush(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(calls))
        task.add_done_callback(_retrieve)

    async def _send(self, calls: list[_Call], *, reloaded: bool = False) -> None:
        # evalsha, not the Script object: a Script first asks Redis whether it knows the script
        # (one more round trip); NOSCRIPT replies load their scripts and go out once more.
        wait = self._min_replicas > 0 and any(replicated for _s, _a, _r, replicated in calls)
        commands = [hiredis.pack_command(("EVALSHA", s.sha, 0, *args)) for s, args, _r, _w in calls]
        if wait:
            wait_command: tuple[Any, ...] = ("WAIT", self._min_replicas, self._replicas_timeout_ms)
            commands.append(hiredis.pack_command(wait_command))
        packed = b"".join(commands)
        pool = self._client.connection_pool
        kept, self._kept = self._kept, None
        try:
            connection = kept or await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                results = await _exchange_retried_once(connection, packed, len(commands))
            except BaseException:
                await pool.release(connection)
                raise
        except BaseException as exc:  # the connection failed: every call fails as it would alone
            for _script, _args, reply, _replicated in calls:
                _fail(reply, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        await self._keep_or_release(connection)
        shortfall = self._shortfall(results.pop()) if wait else None
        unknown: list[_Call] = []
        for call, result in zip(calls, results, strict=True):
            _script, _args, reply, replicated = call
            if isinstance(result, NoScriptError) and not reloaded:  # a restart, flush or failover
                unknown.append(call)
            elif reply.done():
                continue
            elif isinstance(result, BaseException):
                _fail(reply, result)
            elif replicated and shortfall is not None:
                _fail(reply, shortfall)
            else:
                reply.set_result(result)
        if unknown:
            await self._reload_and_send(unknown)

    async def replicated_command(self, *command: Any) -> Any:
        """One plain command (not a script) that waits for the replicas as a replicated script
        call does: the command and its WAIT in one pipeline, on one connection (WAIT counts
        that connection's writes). NotReplicated when too few confirm; without replicas asked
        for, just the command."""
        if self._min_replicas == 0:
            return await self._client.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command(*command)
        pipe.execute_command("WAIT", self._min_replicas, self._replicas_timeout_ms)
        reply, acknowledged = await pipe.execute()
        if (shortfall := self._shortfall(acknowledged)) is not None:
            raise shortfall
        return reply

    def _shortfall(self, acknowledged: Any) -> NotReplicated | None:
        """The error of the batch's replicated calls, given WAIT's reply (None: replicated)."""
        if isinstance(acknowledged, int) and acknowledged >= self._min_replicas:
            return None
        got = acknowledged if isinstance(acknowledged, int) else f"none ({acknowledged})"
        return NotReplicated(
            f"stored on the Redis primary, but {got} of the {self._min_replicas} replicas asked for "
            f"(TASKBROKER_REDIS_MIN_REPLICAS) confirmed it within {self._replicas_timeout_ms} ms: "
            "it may be lost if the primary fails; retry (a task: with the same idempotency key)"
        )

    async def _reload_and_send(self, calls: list[_Call]) -> None:
        """Load the scripts Redis did not know (a promoted replica has none of the old
        primary's), then send those calls once more, as one batch, in their order."""
        try:
            for script in {id(script): script for script, *_ in calls}.values():
                await self._client.script_load(script.script)
        except BaseException as exc:
            for _script, _args, reply, _replicated in calls:
                _fail(reply, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        await self._send(calls, reloaded=True)

    async def _keep_or_release(self, connection: AbstractConnection) -> None:
        if self._kept is None:  # another batch may have kept one while this one was out
            self._kept = connection
        else:
            await self._client.connection_pool.release(connection)


async def _exchange_retried_once(connection: AbstractConnection, packed: bytes, count: int) -> list[Any]:
    """The exchange, sent once more on a fresh connection if the first one was found dropped
    (killed, idle-closed, its server gone: a failover). Not after a timeout: a slow Redis may
    have run the batch, and sending it again would run its scripts twice."""
    try:
        return await _exchange(connection, packed, count)
    except RedisConnectionError:
        await connection.disconnect()
        return await _exchange(connection, packed, count)


async def _exchange(connection: AbstractConnection, packed: bytes, count: int) -> list[Any]:
    """Write the batch, read its ``count`` replies; an error reply is returned, not raised.

    One timeout (the connection's socket timeout) covers all the reads; a timeout or a failure
    part-way leaves the connection disconnected, so no later command reads a stale reply."""
    if not connection.is_connected:  # its own connect: a Sentinel-managed one finds the primary
        await connection.connect()  # type: ignore[no-untyped-call]
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
