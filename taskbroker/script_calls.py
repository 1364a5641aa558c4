"""Lua script calls made in the same event-loop turn leave for Redis in one pipeline.

A worker claims, renews and finishes many tasks at once, and an API serves many requests at
once; sent one by one, each script call costs its own socket write and its own wait. Batching
what one loop turn asks for keeps each script atomic and in the order it was called (a
pipeline without MULTI runs them one after the other), and changes no caller: each gets the
reply or the error its own call would have produced.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Call = tuple[AsyncScript, list[Any], asyncio.Future[Any]]


class ScriptCalls:
    """Runs registered scripts for one client; calls of one loop turn share a round trip."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._queued: list[_Call] = []

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
        if len(calls) == 1:
            script, args, reply = calls[0]
            await _settle(reply, _run_one(script, args))
            return
        pipe = self._client.pipeline(transaction=False)
        for script, args, _reply in calls:
            # evalsha, not the Script object: a pipeline holding Script objects first asks Redis
            # which scripts it knows (one more round trip per batch).
            pipe.evalsha(script.sha, 0, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every call fails as it would alone
            for _script, _args, reply in calls:
                _fail(reply, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (script, args, reply), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its scripts
                await _settle(reply, _run_one(script, args))
            elif reply.done():
                continue
            elif isinstance(result, BaseException):
                _fail(reply, result)
            else:
                reply.set_result(result)


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
