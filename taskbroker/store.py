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
of definitions). ``{prefix}:delayed`` (delayed tasks by not_before, which the timeout daemon releases) with
``{prefix}:delayed_counts`` (a hash: each scheduler's delayed tasks, for metrics), and
``{prefix}:scheduler_defaults`` (a scheduler's default retry policy and attempt_timeout, in the
form the create script reads). A task with a retry policy has ``retry`` (RetryPolicy.compact()),
``attempt_timeout`` and ``errors`` (JSON, its latest attempts' errors); a delayed one has
``not_before``. A final task is a hash with a TTL (TASKBROKER_FAILED_RETENTION for failed and timed-out ones,
TASKBROKER_RETENTION for the others), listed in ``{prefix}:final:{scheduler}:{state}`` (by finish
time in ms, trimmed to the retention as tasks finish: GET /tasks?state=failed, the bulk retry).
Also ``{prefix}:idem:{scheduler}:{hash}`` (an idempotency key -> the live task holding it; the
record's ``published`` marks its message confirmed) and ``{prefix}:webhooks`` (final tasks whose
webhook is due, by due time; taskbroker.webhook_store).
Consumers: ``{prefix}:consumer:{id}`` (hash: a live consumer's inventory record, written by its
heartbeat and expiring one lease later), ``{prefix}:consumers`` (sorted set of consumer ids by
when their record expires) and ``{prefix}:paused`` (set of paused scheduler names).
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
from taskbroker.models import ConsumerStatus, SchedulerDefinition, Task, TaskState
from taskbroker.retry_policy import KEPT_ERRORS, AttemptError, RetryPolicy
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


def load_script(
    name: str,
    events_max_length: int = 100_000,
    republish_after: float = 120.0,
    failed_retention: timedelta = timedelta(days=7),
) -> str:
    lua = resources.files("taskbroker") / "lua"
    # Constants in the script text, not arguments: every script keeps its ARGV layout.
    settings = (
        f"local events_max_length = {int(events_max_length)}\n"
        f"local republish_after = {float(republish_after)!r}\n"
        f"local failed_retention_ms = {_ms(failed_retention)}\n"
    )
    return settings + (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    GONE = "gone"
    FINAL = "final"
    BUSY = "busy"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    DELAYED = "delayed"
    """A stale duplicate message of a task that now waits delayed (for a retry)."""


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
    not_before: datetime | None = None
    """Stored ``delayed`` until then, not pending (nothing is published for it now)."""
    retry: RetryPolicy | None = None
    """None: the scheduler's policy, if it has one."""
    attempt_timeout: float | None = None
    """None: the scheduler's, if it has one."""


@dataclass(frozen=True, slots=True)
class AppliedDefaults:
    """In ``create``'s answer: the task was created, and took these defaults of its scheduler
    (None where it had its own, or the scheduler none)."""

    retry: RetryPolicy | None
    attempt_timeout: float | None


@dataclass(frozen=True, slots=True)
class Released:
    """A delayed task made pending by ``release_due``: to be published with its priority."""

    id: str
    scheduler: str
    priority: int


class AttemptOutcome(enum.StrEnum):
    """What ``fail_attempt`` did."""

    DELAYED = "delayed"
    """A retry: the task waits delayed until its backoff passes."""
    FAILED = "failed"


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
    delayed: int = 0
    delayed_per_scheduler: dict[str, int] | None = None
    """Delayed tasks of each scheduler (counted in per_scheduler too)."""
    paused: frozenset[str] = frozenset()
    """The paused schedulers."""


@dataclass(frozen=True, slots=True)
class ConsumerIdentity:
    """What a consumer's inventory record says of it that does not change while it runs."""

    id: str
    scheduler: str
    runtime: str
    host: str
    pid: int
    version: str
    concurrency: int
    started_at: float
    """Epoch seconds."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to a consumer's heartbeat."""

    lost: list[str]
    """The task ids it no longer holds (aborted, timed out, finished elsewhere, taken over)."""
    paused: bool
    """Its scheduler is paused: take no new messages."""


def _epoch(value: datetime) -> str:
    return repr(value.timestamp())


def _from_epoch(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _ms(value: timedelta) -> str:
    return str(int(value.total_seconds() * 1000))


def _errors(record: dict[str, str]) -> list[AttemptError]:
    """Its attempts' errors: the ``errors`` list of a task with a retry policy; for another
    failed task, its one error."""
    stored = record.get("errors")
    if stored is not None:
        return [
            AttemptError(attempt=e["attempt"], error=e["error"], at=datetime.fromtimestamp(e["at"], UTC))
            for e in orjson.loads(stored)
        ]
    error = record.get("error")
    if error is None or record["state"] != TaskState.FAILED.value:
        return []
    finished = float(record.get("finished_at") or record["created_at"])
    return [
        AttemptError(
            attempt=int(record.get("attempts", 0)), error=error, at=datetime.fromtimestamp(finished, UTC)
        )
    ]


def task_from_record(record: dict[str, str]) -> Task:
    """Build a Task from its Redis hash (string fields, epoch timestamps, JSON bodies)."""
    result = record.get("result")
    retry = record.get("retry")
    attempt_timeout = record.get("attempt_timeout")
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
        not_before=_from_epoch(record.get("not_before")),
        retry=None if retry is None else RetryPolicy.from_compact(retry),
        attempt_timeout=None if attempt_timeout is None else float(attempt_timeout),
        errors=_errors(record),
    )


def _applied_defaults(item: str) -> AppliedDefaults | None:
    """``create``'s ``new`` or ``new:<retry>;<attempt_timeout>`` item."""
    if item == "new":
        return None
    retry, _, attempt_timeout = item.removeprefix("new:").partition(";")
    return AppliedDefaults(
        retry=RetryPolicy.from_compact(retry) if retry else None,
        attempt_timeout=float(attempt_timeout) if attempt_timeout else None,
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
        failed_retention: timedelta | None = None,
        min_replicas: int = 0,
        replicas_timeout_ms: int = 1000,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._retention_ms = _ms(retention)
        self._failed_retention = retention if failed_retention is None else failed_retention
        """How long failed and timed-out tasks are kept (completed and aborted: ``retention``)."""
        # Writes a client is told were accepted (creations, aborts, scheduler definitions) wait
        # for ``min_replicas`` replicas (TASKBROKER_REDIS_MIN_REPLICAS), else NotReplicated.
        self._script_calls = ScriptCalls(
            client, min_replicas=min_replicas, replicas_timeout_ms=replicas_timeout_ms
        )
        self._scripts = {
            name: client.register_script(
                load_script(name, events_max_length, republish_after, self._failed_retention)
            )
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
                "retry",
                "abort_many",
                "release_due",
                "trim_final",
                "fail_attempt",
                "republish_soon",
                "heartbeat",
                "pause",
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

    async def _run(self, script: str, *args: str | int | float, replicated: bool = False) -> Any:
        return await self._script_calls.call(
            self._scripts[script], [self._prefix, *args], replicated=replicated
        )

    async def close(self) -> None:
        await self._redis.aclose()

    @redis_call
    async def ping(self) -> None:
        await self._redis.ping()

    # Schedulers

    @redis_call
    async def register_scheduler(self, definition: SchedulerDefinition) -> bool:
        """Store a scheduler definition. True if new, False if the same one was already there."""
        # Fields at None are left out, so a definition without the later optional fields (retry,
        # attempt_timeout) reads as it was stored before they existed.
        canonical = orjson.dumps(
            definition.model_dump(mode="json", exclude_none=True), option=orjson.OPT_SORT_KEYS
        ).decode()
        reply = await self._run(
            "register_scheduler", definition.name, canonical, definition.defaults(), replicated=True
        )
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
        pipe.hgetall(self._key("delayed_counts"))
        pipe.smembers(self._key("paused"))
        *per_scheduler, live, running, delayed_counts, paused = await pipe.execute()
        delayed = {n: max(int(delayed_counts.get(n, 0)), 0) for n in names}
        total_delayed = sum(delayed.values())
        return LiveCensus(
            per_scheduler={n: int(c) for n, c in zip(names, per_scheduler, strict=True)},
            pending=max(int(live) - int(running) - total_delayed, 0),
            running=int(running),
            delayed=total_delayed,
            delayed_per_scheduler=delayed,
            paused=frozenset(str(n) for n in paused),
        )

    @redis_call
    async def running_per_scheduler(self) -> dict[str, int]:
        """Tasks holding a lease, per scheduler, for the dashboard's overview: O(running tasks),
        which the consumers' concurrency bounds, never O(live tasks). The lease index holds ids
        only, so each one's scheduler is read from its record in one pipelined round trip."""
        ids = [str(i) for i in await self._redis.zrange(self._key("leases"), 0, -1)]
        if not ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self._key("task", task_id), "scheduler")
        counts: dict[str, int] = {}
        for scheduler in await pipe.execute():
            if scheduler is not None:  # finished between the two reads
                counts[str(scheduler)] = counts.get(str(scheduler), 0) + 1
        return counts

    @redis_call
    async def holder_of_key(self, scheduler: str, owner: str, key: str) -> UUID | None:
        """The live task of ``scheduler`` that ``owner`` scheduled with idempotency key ``key``,
        if any (a finished holder may still be named by the index: the caller reads the task)."""
        held = await self._redis.get(self.idempotency_key(scheduler, owner, key))
        return UUID(str(held)) if held is not None else None

    @redis_call
    async def delete_scheduler(self, name: str, *, force: bool, now: datetime) -> list[str]:
        """Remove a scheduler; with force, abort its live tasks first. Returns the aborted ids."""
        reply = await self._run(
            "delete_scheduler", name, "1" if force else "0", _epoch(now), self._retention_ms, replicated=True
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
    async def create(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task | AppliedDefaults | None]:
        """Store new tasks atomically (pending, or delayed with a ``not_before``): all of them,
        or none if a scheduler is unknown (UnknownScheduler), a task asks a quorum scheduler for a priority
        (PriorityUnsupported) or an id is already stored (TaskExists).

        A task whose idempotency key a live, published task holds is not created: its place in
        the answer is that task (None where a task was created, AppliedDefaults where it was
        created with defaults of its scheduler). Raises IdempotencyKeyPending,
        creating nothing, while a key's holder still waits for its publish to be confirmed.
        NotReplicated (with min_replicas): stored, but not known to be on the replicas.
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
                "" if task.not_before is None else _epoch(task.not_before),
                "" if task.retry is None else task.retry.compact(),
                "" if task.attempt_timeout is None else repr(task.attempt_timeout),
            ]
        reply = await self._run("create", *args, replicated=True)
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
        return [
            _applied_defaults(item) if isinstance(item, str) else task_from_record(record_fields(item))
            for item in reply[1:]
        ]

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
        reply = await self._run("abort", str(task_id), _epoch(now), self._retention_ms, replicated=True)
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
    async def fail_attempt(
        self, task_id: str, *, consumer: str, error: str, retry_at: float | None, why_not: str = ""
    ) -> AttemptOutcome | TaskState:
        """A failed attempt of a task with a retry policy: delayed until ``retry_at`` (epoch
        seconds), or failed when ``retry_at`` is None or not before the task's timeout (then
        ``why_not`` is appended to the error). The error is kept in the task's ``errors``.
        Returns what was done, or the state kept instead (as ``finish``)."""
        reply = await self._run(
            "fail_attempt",
            task_id,
            consumer,
            repr(time.time()),
            self._retention_ms,
            error,
            "" if retry_at is None else repr(retry_at),
            KEPT_ERRORS,
            why_not,
        )
        if reply in ("delayed", "failed"):
            return AttemptOutcome(reply)
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
    async def release_due(self, *, limit: int, now: float | None = None) -> list[Released]:
        """Make up to ``limit`` due delayed tasks pending, atomically; the caller publishes them.
        A publish that is lost leaves them to reconciliation (they are in the unclaimed index)."""
        flat: list[str] = await self._run("release_due", repr(time.time() if now is None else now), limit)
        return [Released(flat[i], flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]

    @redis_call
    async def republish_soon(self, task_ids: Sequence[str]) -> None:
        """Make pending tasks whose publish failed due for reconciliation now."""
        if task_ids:
            await self._run("republish_soon", repr(time.time()), *task_ids)

    @redis_call
    async def trim_final_indexes(self, *, now: float | None = None) -> int:
        """Drop the entries of retained final tasks past their retention from every scheduler's
        final indexes (an idle scheduler's are not trimmed by new finals); how many went."""
        return int(
            await self._run("trim_final", repr(time.time() if now is None else now), self._retention_ms)
        )

    @redis_call
    async def delayed_count(self) -> int:
        return int(await self._redis.zcard(self._key("delayed")))

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

    # Re-running and bulk changes by an operator (docs/rerunning.md)

    @redis_call
    async def retry(
        self,
        task_ids: Sequence[str],
        *,
        now: datetime,
        expires: datetime,
        not_before: datetime | None = None,
        owner: str = "",
    ) -> list[Rerun]:
        """Re-run failed, timed-out and aborted tasks, in one atomic step: each goes back to
        pending (due for reconciliation's republish, so the caller's publish may fail) or, with
        ``not_before``, to delayed; either way expiring at ``expires`` (its new timeout).
        ``owner`` ("": any) leaves other tokens' tasks alone, answered as gone. The caller
        publishes the pending ones."""
        if not task_ids:
            return []
        flat: list[str] = await self._run(
            "retry",
            _epoch(now),
            _epoch(expires),
            "" if not_before is None else _epoch(not_before),
            owner,
            *task_ids,
            replicated=True,
        )
        return [
            Rerun(flat[i], flat[i + 1], flat[i + 2], flat[i + 3], int(flat[i + 4] or 0))
            for i in range(0, len(flat), 5)
        ]

    @redis_call
    async def abort_many(
        self,
        task_ids: Sequence[str],
        *,
        now: datetime,
        limit: int,
        owner: str = "",
        state: TaskState | None = None,
        created_before: datetime | None = None,
    ) -> list[str]:
        """Abort, of ``task_ids``, at most ``limit`` live tasks matching the filter, in one atomic
        step (``owner`` "": any token's). Returns the ids aborted."""
        if not task_ids or limit < 1:
            return []
        aborted: list[str] = await self._run(
            "abort_many",
            _epoch(now),
            self._retention_ms,
            owner,
            "" if state is None else state.value,
            "" if created_before is None else _epoch(created_before),
            limit,
            *task_ids,
            replicated=True,
        )
        return aborted

    async def live_ids(self, scheduler: str, *, batch: int) -> AsyncIterator[list[str]]:
        """A scheduler's live task ids, a batch at a time (SSCAN: a task that starts or ends
        meanwhile may be missed or repeated)."""
        position = 0
        while True:
            try:
                position, found = await self._redis.sscan(self._key("live", scheduler), position, count=batch)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from exc
            if found:
                yield [str(member) for member in found]
            if int(position) == 0:
                return

    @redis_call
    async def final_ids(
        self,
        scheduler: str,
        state: TaskState,
        *,
        finished_before: datetime | None,
        limit: int,
        offset: int = 0,
    ) -> list[str]:
        """Up to ``limit`` ids of the scheduler's retained tasks in final ``state`` that finished
        before ``finished_before`` (None: whenever), newest first, past the first ``offset``."""
        found = await self._redis.zrange(
            self._final_key(scheduler, state),
            "+inf" if finished_before is None else _score_ms(finished_before),
            "-inf",
            desc=True,
            byscore=True,
            offset=offset,
            num=limit,
        )
        return [str(member) for member in found]

    @redis_call
    async def list_final(
        self, *, schedulers: Sequence[str], states: Sequence[TaskState], limit: int, cursor: str | None
    ) -> TaskPage:
        """A page of retained final tasks, newest first (by finish time), from the final indexes
        of ``schedulers`` x ``states``, merged.

        The cursor is ``"<finished_at in ms>:<skip>"``: the page starts at that finish time, past
        the ``skip`` tasks that finished at that very millisecond and were listed already (a
        timeout sweep finishes a whole batch at once). A task that finishes while a client pages
        comes before its cursor and is not listed; one re-run meanwhile is left out. Index
        entries whose task outlived its retention are dropped as they are met.
        """
        top, skip = _parse_cursor(cursor)
        keys = [self._final_key(s, state) for s in schedulers for state in states]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(
                key,
                top if cursor else "+inf",
                "-inf",
                desc=True,
                byscore=True,
                withscores=True,
                offset=0,
                num=limit + skip,
            )
        found = await pipe.execute() if keys else []
        # Within one index Redis orders equal scores by member (descending): keep that order,
        # then the order of the keys, so that the merged order is the same from page to page.
        merged = sorted(
            (
                (int(score), key, str(member))
                for key, members in zip(keys, found, strict=True)
                for member, score in members
            ),
            key=lambda entry: -entry[0],
        )
        if cursor:
            merged = merged[sum(1 for entry in merged[:skip] if entry[0] == top) :]
        page = merged[:limit]
        next_cursor: str | None = None
        more = len(merged) > limit or any(len(members) == limit + skip for members in found)
        if more and page:
            last = page[-1][0]
            same = sum(1 for entry in page if entry[0] == last)
            next_cursor = f"{last}:{same + (skip if cursor and last == top else 0)}"
        records = await self._run("read", *(member for _, _, member in page)) if page else []
        tasks: list[Task] = []
        stale = self._redis.pipeline(transaction=False)
        for (_, key, member), flat in zip(page, records, strict=True):
            if not flat:
                stale.zrem(key, member)
                continue
            task = task_from_record(record_fields(flat))
            if task.state in states:
                tasks.append(task)
        if len(stale):
            await stale.execute()
        return TaskPage(tasks=tasks, next_cursor=next_cursor)

    def _final_key(self, scheduler: str, state: TaskState) -> str:
        return self._key("final", scheduler, state.value)

    # Consumers: the inventory their heartbeats keep, and pausing a scheduler

    @redis_call
    async def heartbeat(
        self, consumer: ConsumerIdentity, task_ids: Sequence[str], *, lease: float, paused: bool
    ) -> Heartbeat:
        """A consumer's heartbeat, in one round trip: renew its leases of ``task_ids``, write its
        inventory record (the tasks it still holds, whether it is ``paused`` now), which expires
        one ``lease`` later unless renewed, and read whether its scheduler is paused."""
        now = time.time()
        record = orjson.dumps(
            {
                "id": consumer.id,
                "runtime": consumer.runtime,
                "host": consumer.host,
                "pid": consumer.pid,
                "version": consumer.version,
                "concurrency": consumer.concurrency,
                "started_at": consumer.started_at,
                "paused": paused,
            }
        ).decode()
        lost, scheduler_paused = await self._run(
            "heartbeat",
            consumer.id,
            repr(now + lease),
            repr(now),
            str(max(int(lease * 1000), 1)),
            consumer.scheduler,
            record,
            *task_ids,
        )
        return Heartbeat(lost=[str(i) for i in lost], paused=bool(scheduler_paused))

    @redis_call
    async def forget_consumer(self, consumer_id: str) -> None:
        """Remove a consumer's inventory record at once (a clean stop)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key("consumer", consumer_id))
        pipe.zrem(self._key("consumers"), consumer_id)
        await pipe.execute()

    @redis_call
    async def list_consumers(self, *, scheduler: str | None = None) -> list[ConsumerStatus]:
        """Every live consumer (of ``scheduler`` only, if given), sorted by scheduler then id.

        A consumer's record expires one lease after its last heartbeat, so a dead one drops out
        by itself; the ids of expired records are pruned from the index here, as they are met."""
        index = self._key("consumers")
        await self._redis.zremrangebyscore(index, "-inf", f"({time.time()!r}")
        ids = [str(i) for i in await self._redis.zrange(index, 0, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for consumer_id in ids:
            pipe.hgetall(self._key("consumer", consumer_id))
        found: list[ConsumerStatus] = []
        for fields in await pipe.execute():
            if not fields or (scheduler is not None and fields["scheduler"] != scheduler):
                continue
            record = orjson.loads(fields["record"])
            found.append(
                ConsumerStatus(
                    id=record["id"],
                    scheduler=fields["scheduler"],
                    runtime=record["runtime"],
                    host=record["host"],
                    pid=record["pid"],
                    version=record["version"],
                    concurrency=record["concurrency"],
                    running=[UUID(i) for i in fields["running"].split()],
                    started_at=datetime.fromtimestamp(record["started_at"], UTC),
                    last_heartbeat=datetime.fromtimestamp(float(fields["last_heartbeat"]), UTC),
                    paused=record["paused"],
                )
            )
        return sorted(found, key=lambda c: (c.scheduler, c.id))

    @redis_call
    async def set_paused(self, scheduler: str, paused: bool) -> None:
        """Pause or resume a scheduler (idempotent); its consumers follow on their next heartbeat.
        Raises UnknownScheduler."""
        if await self._run("pause", scheduler, "1" if paused else "0") == "gone":
            raise UnknownScheduler(scheduler)

    @redis_call
    async def paused_schedulers(self) -> set[str]:
        return {str(name) for name in await self._redis.smembers(self._key("paused"))}


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


@dataclass(frozen=True, slots=True)
class Rerun:
    """What ``TaskStore.retry`` did with one task."""

    id: str
    outcome: str
    """``retried``; ``kept`` (live or complete: left as it was); ``unscheduled`` (its scheduler
    was deleted); ``gone`` (not stored, or another token's)."""
    state: str
    """Its state now ("" when gone): pending or delayed when retried."""
    scheduler: str
    priority: int

    @property
    def retried(self) -> bool:
        return self.outcome == "retried"


def _score_ms(value: datetime) -> int:
    """A time as the final indexes score it: whole milliseconds since the epoch."""
    return int(value.timestamp() * 1000)
