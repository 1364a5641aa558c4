"""Inline task functions that leave a trace in Redis, so a test can count how often a task really
ran, in which process, and whether two runs overlapped, whichever consumer process ran it.

A task is identified by a ``tag`` the test chooses (the Inline runtime does not pass the task id
to the function). Each run appends a ``start`` event, sleeps if asked, then appends an ``end``
event; per-tag counters make "ran exactly once" one read. Everything lives under the test's key
prefix, so the fixtures' cleanup removes it.

The functions take the Redis URL and prefix as keyword arguments (``Recording.call`` fills them
in); without them they fall back to ``TASKBROKER_TEST_RECORDER_REDIS_URL`` and
``TASKBROKER_TEST_RECORDER_PREFIX`` in the consumer's environment. A consumer must be started with
``tests.support.recorder`` on its allow-list.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

ENV_REDIS_URL = "TASKBROKER_TEST_RECORDER_REDIS_URL"
ENV_PREFIX = "TASKBROKER_TEST_RECORDER_PREFIX"
MODULE = "tests.support.recorder"

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _where(redis_url: str | None, prefix: str | None) -> tuple[str, str]:
    url = redis_url or os.environ.get(ENV_REDIS_URL)
    key_prefix = prefix or os.environ.get(ENV_PREFIX)
    if not url or not key_prefix:
        raise RuntimeError(f"recorder needs redis_url and prefix (kwargs, or {ENV_REDIS_URL} / {ENV_PREFIX})")
    return url, key_prefix


def _events_key(prefix: str) -> str:
    return f"{prefix}:recorder:events"


def _keys(prefix: str, tag: str) -> tuple[str, str, str]:
    """The shared event list, and the tag's start and end counters."""
    return _events_key(prefix), f"{prefix}:recorder:starts:{tag}", f"{prefix}:recorder:ends:{tag}"


def _release_key(prefix: str, tag: str) -> str:
    return f"{prefix}:recorder:release:{tag}"


def _event(tag: str, event: str, run: int) -> str:
    return json.dumps({"tag": tag, "event": event, "run": run, "pid": os.getpid(), "at": time.time()})


def _sync_client(url: str) -> redis.Redis:
    # One pool per URL for the whole process: the Inline runtime calls sync functions from a thread
    # pool, and a connection per call would dominate a 500-task run.
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, decode_responses=True)
        return client


def _pause(run: int, seconds: float, first_run_seconds: float | None) -> float:
    """How long this run sleeps: ``first_run_seconds`` lets a test make only the first run long,
    so a task handed to another consumer then finishes quickly there."""
    return first_run_seconds if first_run_seconds is not None and run == 1 else seconds


def record(
    tag: str,
    *,
    seconds: float = 0.0,
    first_run_seconds: float | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Record a run of ``tag`` (blocking sleep: runs in the Inline runtime's thread pool)."""
    url, key_prefix = _where(redis_url, prefix)
    events, starts, ends = _keys(key_prefix, tag)
    client = _sync_client(url)
    run = int(client.incr(starts))
    client.rpush(events, _event(tag, "start", run))
    time.sleep(_pause(run, seconds, first_run_seconds))
    client.incr(ends)
    client.rpush(events, _event(tag, "end", run))
    return {"tag": tag, "run": run, "pid": os.getpid()}


async def arecord(
    tag: str,
    *,
    seconds: float = 0.0,
    first_run_seconds: float | None = None,
    held: bool = False,
    fail_runs: int = 0,
    redis_url: str | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Record a run of ``tag`` (cancellable sleep: a cancelled run records ``cancelled``, not ``end``,
    and does not count in ``ends``). A ``held`` run waits, instead of sleeping, until the test
    calls ``Recording.release(tag)``, so a test can act while it is certainly still running. The
    first ``fail_runs`` runs record ``failed`` and raise (for retries)."""
    url, key_prefix = _where(redis_url, prefix)
    events, starts, ends = _keys(key_prefix, tag)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        run = int(await client.incr(starts))
        await client.rpush(events, _event(tag, "start", run))
        if run <= fail_runs:
            await client.rpush(events, _event(tag, "failed", run))
            raise RuntimeError(f"failure {run}")
        try:
            if held:
                await client.blpop([_release_key(key_prefix, tag)], timeout=0)
            else:
                await asyncio.sleep(_pause(run, seconds, first_run_seconds))
        except asyncio.CancelledError:
            await client.rpush(events, _event(tag, "cancelled", run))
            raise
        await client.incr(ends)
        await client.rpush(events, _event(tag, "end", run))
    finally:
        await client.aclose()
    return {"tag": tag, "run": run, "pid": os.getpid()}


@dataclass(frozen=True)
class Event:
    tag: str
    event: str
    run: int
    pid: int
    at: float


class Recording:
    """The test's side: builds task attributes that call the recorder, and reads what it wrote.

    Reads use a blocking client on purpose: they are short local calls, and the same reader then
    serves async integration tests and sync end-to-end tests alike.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self._client = redis.Redis.from_url(redis_url, decode_responses=True)

    def close(self) -> None:
        """Delete what the recorder wrote (the embedded-backend tests have no other cleanup for it)."""
        try:
            keys = list(self._client.scan_iter(match=f"{self.prefix}:recorder:*", count=1000))
            if keys:
                self._client.delete(*keys)
        finally:
            self._client.close()

    def call(
        self,
        tag: str,
        *,
        asynchronous: bool = False,
        seconds: float = 0.0,
        first_run_seconds: float | None = None,
        held: bool = False,
        fail_runs: int = 0,
    ) -> dict[str, Any]:
        """Inline task attributes for one recorded run of ``tag``; ``held`` (asynchronous only)
        keeps the run going until ``release(tag)``; the first ``fail_runs`` runs (asynchronous
        only) fail."""
        kwargs: dict[str, Any] = {
            "tag": tag,
            "seconds": seconds,
            "redis_url": self.redis_url,
            "prefix": self.prefix,
        }
        if first_run_seconds is not None:
            kwargs["first_run_seconds"] = first_run_seconds
        if held:
            if not asynchronous:
                raise ValueError("only an asynchronous run can be held")
            kwargs["held"] = True
        if fail_runs:
            if not asynchronous:
                raise ValueError("only an asynchronous run can fail on purpose")
            kwargs["fail_runs"] = fail_runs
        function = "arecord" if asynchronous else "record"
        return {"function": f"{MODULE}:{function}", "kwargs": kwargs}

    def release(self, tag: str) -> None:
        """Let one held run of ``tag`` finish."""
        self._client.rpush(_release_key(self.prefix, tag), "go")

    def starts(self, tag: str) -> int:
        return int(self._client.get(_keys(self.prefix, tag)[1]) or 0)

    def ends(self, tag: str) -> int:
        return int(self._client.get(_keys(self.prefix, tag)[2]) or 0)

    def events(self, tag: str | None = None) -> list[Event]:
        raw: list[str] = self._client.lrange(_events_key(self.prefix), 0, -1)  # type: ignore[assignment]
        parsed = [Event(**json.loads(item)) for item in raw]
        return [e for e in parsed if tag is None or e.tag == tag]


def overlapping_runs(events: list[Event], killed_at: dict[int, float]) -> list[str]:
    """Runs of one task whose lifetimes intersect. A run ends at its end or cancelled event, or
    when its process was SIGKILLed."""
    starts: dict[tuple[str, int], Event] = {}
    stops: dict[tuple[str, int], float] = {}
    for event in events:
        key = (event.tag, event.run)
        if event.event == "start":
            starts[key] = event
        else:
            stops[key] = event.at
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    problems = []
    for key, start in starts.items():
        stop = stops.get(key, killed_at.get(start.pid))
        if stop is None:
            problems.append(f"{key}: started in pid {start.pid}, which neither ended it nor was killed")
            continue
        intervals[start.tag].append((start.at, stop, start.run))
    for tag, runs in intervals.items():
        runs.sort()
        latest_stop, latest_run = runs[0][1], runs[0][2]
        for start_at, stop_at, run in runs[1:]:
            if start_at < latest_stop:
                problems.append(f"{tag}: run {run} started while run {latest_run} still ran")
            if stop_at > latest_stop:
                latest_stop, latest_run = stop_at, run
    return problems
