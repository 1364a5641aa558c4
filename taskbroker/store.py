"""The Redis task store: every state change is one atomic Lua script named after the transition.

Task record (hash ``{prefix}:task:{id}``): the Task fields but its id (the key names it),
timestamps as epoch seconds, plus the ``lease_owner`` / ``lease_until`` of a running task; the
scripts' ``task_record`` reads it whole. Its attributes (JSON) are a field of the hash when they
are short (64 bytes at most), else the string ``{prefix}:attributes:{id}``, which lives and
expires with the hash (kept apart so the hash's short fields stay a compact listpack:
bench/results/history.md). Indexes: ``{prefix}:deadlines`` (sorted set of live tasks by timeout, which the
timeout daemon reads), ``{prefix}:leases`` (running tasks by lease expiry), ``{prefix}:unclaimed``
(pending tasks by when their message is published again unless a consumer claims them first:
reconciliation, which the timeout daemon runs),
``{prefix}:live:{scheduler}`` (set of a scheduler's live tasks) and ``{prefix}:schedulers`` (hash
of definitions). Only live tasks are indexed; a final task is a lone hash with a TTL.
Also ``{prefix}:idem:{scheduler}:{hash}`` (an idempotency key -> the live task holding it; the
record's ``published`` marks its message confirmed) and ``{prefix}:webhooks`` (final tasks whose
webhook is due, by due time; taskbroker.webhook_store).
Every transition also appends an event to the stream ``{prefix}:events`` (see taskbroker.events).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskbroker.errors import (
    IdempotencyKeyPending,
    InvalidCursor,
    PriorityUnsupported,
    SchedulerBusy,
    SchedulerConflict,
    StoreUnavailable,
    TaskAlreadyFinished,
    TaskExists,
    TaskNotFound,
    UnknownScheduler,
)
from taskbroker.models import SchedulerDefinition, Task, TaskState
from taskbroker.script_calls import ScriptCalls

P = ParamSpec("P")
R = TypeVar("R")


def redis_call(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn Redis connection failures into StoreUnavailable, which callers know how to answer."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from exc

    return wrapper


def load_script(name: str, events_max_length: int = 100_000, republish_after: float = 120.0) -> str:
    lua = resources.files("taskbroker") / "lua"
    # Constants in the script text, not arguments: every script keeps its ARGV layout.
    settings = (
        f"local events_max_length = {int(events_max_length)}\n"
        f"local republish_after = {float(republish_after)!r}\n"
    )
    return settings + (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    GONE = "gone"
    FINAL = "final"
    BUSY = "busy"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    task: Task | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task id with its scheduler: enough to publish its message again."""

    id: str
    scheduler: str


@dataclass(frozen=True, slots=True)
class Expired:
    id: str
    scheduler: str
    previous_state: TaskState
    attempts: int = 0
    consumer: str | None = None
    """The lease owner of a task that timed out while running."""


@dataclass(frozen=True, slots=True)
class NewTask:
    id: UUID
    scheduler: str
    attributes: dict[str, Any]
    timeout: datetime
    owner: str = ""
    """The id of the token that scheduled it ("" when nobody authenticated it)."""
    priority: int = 0
    key: str = ""
    """Idempotency key ("" for none): the task is not created while another live one holds it."""
    callback_url: str = ""


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[Task]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class LiveCensus:
    """How many tasks are live: per scheduler (pending and running together), and by state."""

    per_scheduler: dict[str, int]
    pending: int
    running: int


def _epoch(value: datetime) -> str:
    return repr(value.timestamp())


def _from_epoch(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _ms(value: timedelta) -> str:
    return str(int(value.total_seconds() * 1000))


def task_from_record(record: dict[str, str]) -> Task:
    """Build a Task from its Redis hash (string fields, epoch timestamps, JSON bodies)."""
    result = record.get("result")
    return Task(
        id=UUID(record["id"]),
        scheduler=record["scheduler"],
        attributes=orjson.loads(record["attributes"]),
        timeout=datetime.fromtimestamp(float(record["timeout"]), UTC),
        state=TaskState(record["state"]),
        created_at=datetime.fromtimestamp(float(record["created_at"]), UTC),
        started_at=_from_epoch(record.get("started_at")),
        finished_at=_from_epoch(record.get("finished_at")),
        attempts=int(record.get("attempts", 0)),
        result=None if result is None else orjson.loads(result),
        error=record.get("error"),
        owner=record.get("owner") or None,
        priority=int(record.get("priority") or 0),
        key=record.get("key") or None,
        callback_url=record.get("callback_url") or None,
    )


def record_fields(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class TaskStore:
    """Task and scheduler state in Redis. Safe to share between coroutines and processes.

    Methods raise StoreUnavailable when Redis cannot be reached; every other outcome is a return
    value or a specific TaskbrokerError.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        retention: timedelta,
        *,
        events_max_length: int = 100_000,
        republish_after: float = 120.0,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._retention_ms = _ms(retention)
        self._script_calls = ScriptCalls(client)
        self._scripts = {
            name: client.register_script(load_script(name, events_max_length, republish_after))
            for name in (
                "create",
                "claim",
                "renew",
                "finish",
                "release",
                "lapsed",
                "requeue",
                "expire",
                "abort",
                "discard",
                "register_scheduler",
                "delete_scheduler",
                "published",
                "unclaimed",
                "republished",
                "read",
            )
        }

    @property
    def script_calls(self) -> ScriptCalls:
        """This store's batching of script calls: other stores on the same client share it, so
        their calls of a loop turn leave in the same round trip."""
        return self._script_calls

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    @property
    def key_prefix(self) -> str:
        return self._prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def _run(self, script: str, *args: str | int | float) -> Any:
        return await self._script_calls.call(self._scripts[script], [self._prefix, *args])

    async def close(self) -> None:
        await self._redis.aclose()

    @redis_call
    async def ping(self) -> None:
        await self._redis.ping()

    # Schedulers

    @redis_call
    async def register_scheduler(self, definition: SchedulerDefinition) -> bool:
        """Store a scheduler definition. True if new, False if the same one was already there."""
        canonical = orjson.dumps(definition.model_dump(), option=orjson.OPT_SORT_KEYS).decode()
        reply = await self._run("register_scheduler", definition.name, canonical)
        if reply[0] == "conflict" and SchedulerDefinition.model_validate_json(reply[1]) == definition:
            # Stored before a field existed (queue_type): the same definition, worded older.
            return False
        if reply[0] == "conflict":
            raise SchedulerConflict(
                f"scheduler {definition.name!r} is registered with a different definition: "
                f"{reply[1]}; delete it first to change it"
            )
        return bool(reply[0] == "created")

    @redis_call
    async def get_scheduler(self, name: str) -> SchedulerDefinition:
        raw = await self._redis.hget(self._key("schedulers"), name)
        if raw is None:
            raise UnknownScheduler(name)
        return SchedulerDefinition.model_validate_json(raw)

    @redis_call
    async def list_schedulers(self) -> list[SchedulerDefinition]:
        raw = await self._redis.hgetall(self._key("schedulers"))
        return sorted(
            (SchedulerDefinition.model_validate_json(v) for v in raw.values()), key=lambda d: d.name
        )

    @redis_call
    async def live_count(self, scheduler: str) -> int:
        return int(await self._redis.scard(self._key("live", scheduler)))

    @redis_call
    async def live_census(self) -> LiveCensus:
        """Live task counts from the indexes, in two round trips of O(schedulers) commands (for
        metrics). Running is every task holding a lease, lapsed ones included until requeued."""
        names = sorted(str(n) for n in await self._redis.hkeys(self._key("schedulers")))
        pipe = self._redis.pipeline(transaction=True)
        for name in names:
            pipe.scard(self._key("live", name))
        pipe.zcard(self._key("deadlines"))
        pipe.zcard(self._key("leases"))
        *per_scheduler, live, running = await pipe.execute()
        return LiveCensus(
            per_scheduler={n: int(c) for n, c in zip(names, per_scheduler, strict=True)},
            pending=max(int(live) - int(running), 0),
            running=int(running),
        )

    @redis_call
    async def delete_scheduler(self, name: str, *, force: bool, now: datetime) -> list[str]:
        """Remove a scheduler; with force, abort its live tasks first. Returns the aborted ids."""
        reply = await self._run(
            "delete_scheduler", name, "1" if force else "0", _epoch(now), self._retention_ms
        )
        if reply[0] == "gone":
            raise UnknownScheduler(name)
        if reply[0] == "busy":
            raise SchedulerBusy(
                f"scheduler {name!r} has {reply[1]} live tasks: wait for them, abort them, "
                "or delete with ?force=true to abort them"
            )
        aborted: list[str] = reply[1]
        return aborted

    # Tasks: the client side

    def idempotency_key(self, scheduler: str, owner: str, key: str) -> str:
        """The Redis key naming the live task that holds ``key``: per scheduler and per token, so
        one client's key never reveals another's task. Hashed, so any key text makes a safe name."""
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return self._key("idem", scheduler, digest)

    @redis_call
    async def create(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task | None]:
        """Store new pending tasks atomically: all of them, or none if a scheduler is unknown
        (UnknownScheduler), a task asks a quorum scheduler for a priority (PriorityUnsupported)
        or an id is already stored (TaskExists).

        A task whose idempotency key a live, published task holds is not created: its place in
        the answer is that task (None where a task was created). Raises IdempotencyKeyPending,
        creating nothing, while a key's holder still waits for its publish to be confirmed.
        """
        args: list[str] = [_epoch(now)]
        for task in tasks:
            args += [
                str(task.id),
                task.scheduler,
                orjson.dumps(task.attributes).decode(),
                _epoch(task.timeout),
                task.owner,
                str(task.priority),
                task.key,
                self.idempotency_key(task.scheduler, task.owner, task.key) if task.key else "",
                task.callback_url,
            ]
        reply = await self._run("create", *args)
        if reply[0] == "unknown_scheduler":
            raise UnknownScheduler(reply[1])
        if reply[0] == "no_priority":
            raise PriorityUnsupported(
                f"scheduler {reply[1]!r} has a quorum queue, which has no priorities (RabbitMQ "
                "3.x refuses them on quorum queues): schedule its tasks at priority 0, or use a "
                "classic scheduler for prioritised work"
            )
        if reply[0] == "exists":
            raise TaskExists(f"task {reply[1]} is already stored")
        if reply[0] == "unconfirmed":
            raise IdempotencyKeyPending(
                f"the idempotency key is held by task {reply[1]}, whose message is not confirmed "
                "yet: retry shortly",
                holder=reply[1],
            )
        return [None if item == "new" else task_from_record(record_fields(item)) for item in reply[1:]]

    @redis_call
    async def mark_published(self, ids: Sequence[UUID]) -> set[str]:
        """Record that these tasks' messages are confirmed: repeats of their keys may now see
        them, and a late ``discard`` leaves them alone. Returns the ids marked (live tasks)."""
        if not ids:
            return set()
        marked: list[str] = await self._run("published", *(str(i) for i in ids))
        return set(marked)

    @redis_call
    async def priorities(self, task_ids: Sequence[str]) -> list[int]:
        """Each task's priority (0 for one gone), in one round trip: republishing keeps them."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self._key("task", task_id), "priority")
        return [int(value or 0) for value in await pipe.execute()]

    @redis_call
    async def discard(self, ids: Sequence[UUID]) -> None:
        """Remove pending tasks whose messages were never confirmed (the caller got a 503)."""
        await self._run("discard", *(str(i) for i in ids))

    @redis_call
    async def get(self, task_id: UUID) -> Task:
        (flat,) = await self._run("read", str(task_id))
        if not flat:
            raise task_not_found(task_id)
        return task_from_record(record_fields(flat))

    @redis_call
    async def abort(self, task_id: UUID, *, now: datetime) -> Task:
        reply = await self._run("abort", str(task_id), _epoch(now), self._retention_ms)
        if reply[0] == "gone":
            raise task_not_found(task_id)
        if reply[0] == "final":
            raise TaskAlreadyFinished(
                f"task {task_id} is already {reply[1]}: only a live task can be aborted"
            )
        return await self.get(task_id)

    @redis_call
    async def list_live(
        self, *, scheduler: str | None, state: TaskState | None, limit: int, cursor: str | None
    ) -> TaskPage:
        """A page of at most ``limit`` live tasks, from a Redis SCAN of the live index.

        The cursor is ``"<scan position>:<skip>"``: SCAN may return more than it was asked for
        (small sets come back whole), so a page can end inside one SCAN batch and the next page
        resumes there. Tasks that start or end while a client pages may be missed or repeated,
        as with any SCAN. A page may hold fewer tasks (the state filter, tasks that just ended);
        the listing is complete when ``next_cursor`` is None.
        """
        position, skip = _parse_cursor(cursor)
        try:
            if scheduler is None:
                next_position, members = await self._redis.zscan(
                    self._key("deadlines"), position, count=limit
                )
                batch = [str(member) for member, _ in members]
            else:
                next_position, found = await self._redis.sscan(
                    self._key("live", scheduler), position, count=limit
                )
                batch = [str(member) for member in found]
        except RedisResponseError:
            # The server is the judge of its own cursors (an embedded Redis takes fewer bits than
            # a real one): a position it refuses is not one this API returned.
            raise InvalidCursor(f"cursor {cursor!r} is not one this API returned") from None
        ids = batch[skip : skip + limit]
        if skip + limit < len(batch):
            next_cursor: str | None = f"{position}:{skip + limit}"
        else:
            next_cursor = None if int(next_position) == 0 else f"{int(next_position)}:0"
        records = await self._run("read", *ids) if ids else []
        tasks = [task_from_record(record_fields(flat)) for flat in records if flat]
        if state is not None:
            tasks = [t for t in tasks if t.state == state]
        return TaskPage(tasks=tasks, next_cursor=next_cursor)

    # Tasks: the consumer side

    @redis_call
    async def claim(self, task_id: str, *, consumer: str, lease: float, max_attempts: int) -> Claim:
        now = time.time()
        reply = await self._run(
            "claim", task_id, consumer, repr(now), repr(now + lease), max_attempts, self._retention_ms
        )
        outcome = ClaimOutcome(reply[0])
        if outcome is ClaimOutcome.CLAIMED:
            return Claim(outcome, task=task_from_record(record_fields(reply[1])))
        return Claim(outcome, detail=reply[1] if len(reply) > 1 else "")

    @redis_call
    async def renew(self, task_ids: Sequence[str], *, consumer: str, lease: float) -> list[str]:
        """Extend this consumer's leases; returns the ids it no longer holds."""
        if not task_ids:
            return []
        lost: list[str] = await self._run("renew", consumer, repr(time.time() + lease), *task_ids)
        return lost

    @redis_call
    async def lease_holder(self, task_id: str) -> str | None:
        """The consumer whose live lease runs ``task_id`` now; None if the task is not running or
        its lease has lapsed. Runtimes use it (at start, in orphan sweeps) to tell a live
        replica's work from a dead predecessor's."""
        state, owner, until = await self._redis.hmget(
            self._key("task", task_id), ["state", "lease_owner", "lease_until"]
        )
        if state != TaskState.RUNNING.value or not owner or float(until or 0) <= time.time():
            return None
        return str(owner)

    @redis_call
    async def finish(
        self, task_id: str, *, consumer: str, state: TaskState, result: Any = None, error: str | None = None
    ) -> TaskState | None:
        """Record a final state. Returns None when written, else the state that was kept instead."""
        result_json = "" if state is not TaskState.COMPLETE else orjson.dumps(result).decode()
        reply = await self._run(
            "finish",
            task_id,
            consumer,
            state.value,
            repr(time.time()),
            self._retention_ms,
            result_json,
            error or "",
        )
        if reply == "ok":
            return None
        return TaskState(reply) if reply else TaskState.ABORTED

    @redis_call
    async def release(self, task_ids: Sequence[str], *, consumer: str) -> list[TaskRef]:
        """Give up running tasks at shutdown: their leases lapse now and the attempt is not counted."""
        if not task_ids:
            return []
        flat: list[str] = await self._run("release", consumer, *task_ids)
        return [TaskRef(i, s) for i, s in zip(flat[::2], flat[1::2], strict=True)]

    # Tasks: the daemon side

    @redis_call
    async def lapsed(self, *, limit: int) -> list[TaskRef]:
        flat: list[str] = await self._run("lapsed", repr(time.time()), limit)
        return [TaskRef(i, s) for i, s in zip(flat[::2], flat[1::2], strict=True)]

    @redis_call
    async def unclaimed(self, *, limit: int) -> list[TaskRef]:
        """Pending tasks no consumer claimed within ``republish_after`` of their last publish
        (or of being stored, for a task whose publish never got confirmed)."""
        flat: list[str] = await self._run("unclaimed", repr(time.time()), limit)
        return [TaskRef(i, s) for i, s in zip(flat[::2], flat[1::2], strict=True)]

    @redis_call
    async def republished(self, task_ids: Sequence[str]) -> int:
        """After their messages were published again and confirmed: still-pending tasks are
        marked published and get their next republish time (twice as far as the last)."""
        if not task_ids:
            return 0
        return int(await self._run("republished", repr(time.time()), *task_ids))

    @redis_call
    async def requeue(self, task_ids: Sequence[str]) -> int:
        """Lapsed running -> pending, for tasks whose message was republished and confirmed."""
        if not task_ids:
            return 0
        return int(await self._run("requeue", repr(time.time()), *task_ids))

    @redis_call
    async def expire_due(self, *, limit: int, now: float | None = None) -> list[Expired]:
        flat: list[str] = await self._run(
            "expire", repr(time.time() if now is None else now), limit, self._retention_ms
        )
        return [
            Expired(flat[i], flat[i + 1], TaskState(flat[i + 2]), int(flat[i + 3]), flat[i + 4] or None)
            for i in range(0, len(flat), 5)
        ]

    @redis_call
    async def live_deadline_count(self) -> int:
        return int(await self._redis.zcard(self._key("deadlines")))

    # Cancellation notices: a fast path only; consumers also learn of it from their heartbeats.

    def cancel_channel(self) -> str:
        return self._key("cancel")

    async def notify_cancel(self, task_ids: Sequence[str]) -> None:
        """Tell consumers to stop these tasks now (best effort: heartbeats catch what this misses)."""
        if not task_ids:
            return
        try:
            await self._redis.publish(self.cancel_channel(), " ".join(task_ids))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return

    async def cancel_notices(self) -> AsyncIterator[list[str]]:
        """Task ids as cancel notices arrive; an empty list first, once subscribed.

        Raises StoreUnavailable when the subscription drops: notices sent meanwhile are lost,
        which is why consumers also check their leases on every heartbeat.
        """
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.cancel_channel())
            yield []
            async for message in pubsub.listen():
                yield str(message["data"]).split()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from exc
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def task_not_found(task_id: UUID | str) -> TaskNotFound:
    """The one answer for a task that cannot be read: the API gives it for a task the caller may
    not see too, word for word, so that nobody learns such a task exists."""
    return TaskNotFound(f"task {task_id} does not exist or finished longer ago than the retention time")


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    """``"<scan position>:<skip>"`` as two ints; a malformed cursor is the caller's 4xx."""
    if not cursor:
        return 0, 0
    position, _, skip = cursor.partition(":")
    try:
        parsed = int(position), int(skip or 0)
    except ValueError:
        raise InvalidCursor(f"cursor {cursor!r} is not one this API returned") from None
    if not 0 <= parsed[0] < 2**64 or parsed[1] < 0:
        raise InvalidCursor(f"cursor {cursor!r} is not one this API returned")
    return parsed
