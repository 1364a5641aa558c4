"""Recurring schedules in Redis, next to the tasks they create, under the same key prefix.

Keys: ``{prefix}:schedule:{id}`` (hash: the definition as JSON plus next_run_at, last_run_at,
last_task_id, runs, version), ``{prefix}:schedule:{id}:runs`` (list: the newest runs first,
trimmed to the history limit), ``{prefix}:schedule_names`` (hash name -> id: names are unique),
``{prefix}:schedule_due`` (sorted set of enabled schedules by next fire time), and the firing
records of runs claimed but not yet created: ``{prefix}:schedule_firing`` (hash task id -> the
task to create) with ``{prefix}:schedule_firing_since`` (sorted set by claim time).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis

from taskbroker.errors import ScheduleNameTaken, ScheduleNotFound
from taskbroker.retry_policy import RetryPolicy
from taskbroker.schedule_models import ScheduleRecord, ScheduleSpec
from taskbroker.script_calls import ScriptCalls
from taskbroker.store import load_script, redis_call

KEEP = "keep"


class FireOutcome(enum.StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    """A missed fire time beyond the grace time: advanced without a run."""
    OVERLAP = "overlap"
    """The previous run is still live and the schedule forbids overlap: advanced without a run."""
    STALE = "stale"
    """Another firer (or a change) got there first: nothing done."""
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class FiringRecord:
    """Everything needed to create a claimed run's task, even after its schedule is deleted."""

    task_id: UUID
    schedule_id: str
    scheduler: str
    attributes: dict[str, Any]
    timeout: datetime
    owner: str
    retry: RetryPolicy | None = None
    attempt_timeout: float | None = None

    def dumps(self) -> str:
        record: dict[str, Any] = {
            "schedule_id": self.schedule_id,
            "scheduler": self.scheduler,
            "attributes": self.attributes,
            "timeout": self.timeout.timestamp(),
            "owner": self.owner,
        }
        if self.retry is not None:
            record["retry"] = self.retry.model_dump()
        if self.attempt_timeout is not None:
            record["attempt_timeout"] = self.attempt_timeout
        return orjson.dumps(record).decode()

    @classmethod
    def loads(cls, task_id: str, raw: str) -> FiringRecord:
        data = orjson.loads(raw)
        return cls(
            UUID(task_id),
            data["schedule_id"],
            data["scheduler"],
            data["attributes"],
            datetime.fromtimestamp(data["timeout"], UTC),
            data["owner"],
            RetryPolicy.model_validate(data["retry"]) if data.get("retry") else None,
            data.get("attempt_timeout"),
        )


@dataclass(frozen=True, slots=True)
class RunEntry:
    task_id: str
    scheduled_for: datetime | None
    fired_at: datetime
    forced: bool


def _epoch(value: datetime) -> str:
    return repr(value.timestamp())


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _record(raw: dict[str, str]) -> ScheduleRecord:
    created = _time(raw["created_at"])
    updated = _time(raw["updated_at"])
    anchor = _time(raw.get("anchor"))
    assert created is not None
    assert updated is not None
    return ScheduleRecord(
        id=UUID(raw["id"]),
        spec=ScheduleSpec.model_validate_json(raw["definition"]),
        owner=raw.get("owner", ""),
        created_at=created,
        updated_at=updated,
        anchor=anchor or created,
        next_run_at=_time(raw.get("next_run_at")),
        last_run_at=_time(raw.get("last_run_at")),
        last_task_id=UUID(raw["last_task_id"]) if raw.get("last_task_id") else None,
        runs=int(raw.get("runs", 0)),
        version=raw.get("version", "0"),
        last_error=raw.get("last_error") or None,
    )


class ScheduleStore:
    """Schedules and their runs. Raises StoreUnavailable when Redis cannot be reached."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        history: int = 100,
        *,
        script_calls: ScriptCalls | None = None,
    ) -> None:
        self._redis = client
        self._script_calls = script_calls
        """The task store's, when given: a schedule's saving and deletion then wait for its
        replicas (TASKBROKER_REDIS_MIN_REPLICAS) as a task's creation does."""
        self._prefix = key_prefix
        self._history = history
        self._scripts = {
            name: client.register_script(load_script(name))
            for name in ("schedule_save", "schedule_delete", "schedule_fire", "schedule_retake")
        }

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def _run(self, script: str, *args: str | int | float) -> Any:
        return await self._scripts[script](keys=[], args=[self._prefix, *args])

    async def _run_replicated(self, script: str, *args: str | int | float) -> Any:
        if self._script_calls is None:
            return await self._run(script, *args)
        return await self._script_calls.call(self._scripts[script], [self._prefix, *args], replicated=True)

    @redis_call
    async def save(
        self,
        schedule_id: UUID,
        spec: ScheduleSpec,
        *,
        now: datetime,
        create: bool = False,
        owner: str = "",
        next_run_at: datetime | str | None = KEEP,
        anchor: datetime | None = None,
        last_error: str | None = KEEP,
    ) -> None:
        """Create or update; ``KEEP`` leaves next_run_at / last_error as they are. Raises
        ScheduleNameTaken, or ScheduleNotFound when updating a deleted schedule."""
        if isinstance(next_run_at, datetime):
            next_arg = _epoch(next_run_at)
        else:
            next_arg = "" if next_run_at is None else KEEP
        reply = await self._run_replicated(
            "schedule_save",
            "create" if create else "update",
            str(schedule_id),
            spec.name,
            spec.model_dump_json(),
            "1" if spec.no_overlap else "0",
            owner,
            _epoch(now),
            next_arg,
            KEEP if anchor is None else _epoch(anchor),
            "" if last_error is None else last_error,
        )
        if reply[0] == "gone":
            raise ScheduleNotFound(f"schedule {schedule_id} does not exist")
        if reply[0] == "name_taken":
            raise ScheduleNameTaken(
                f"another schedule ({reply[1]}) is named {spec.name!r}: names are unique; "
                "choose another or change that one"
            )

    @redis_call
    async def get(self, schedule_id: UUID | str) -> ScheduleRecord:
        raw: dict[str, str] = await self._redis.hgetall(self._key("schedule", str(schedule_id)))  # type: ignore[assignment]
        if not raw:
            raise ScheduleNotFound(f"schedule {schedule_id} does not exist")
        return _record(raw)

    @redis_call
    async def all(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ids: dict[str, str] = await self._redis.hgetall(self._key("schedule_names"))  # type: ignore[assignment]
        pipe = self._redis.pipeline(transaction=False)
        for name in sorted(ids):
            pipe.hgetall(self._key("schedule", ids[name]))
        return [_record(raw) for raw in await pipe.execute() if raw]

    @redis_call
    async def delete(self, schedule_id: UUID) -> None:
        if await self._run_replicated("schedule_delete", str(schedule_id)) == "gone":
            raise ScheduleNotFound(f"schedule {schedule_id} does not exist")

    @redis_call
    async def due(self, now: datetime, *, limit: int) -> list[str]:
        """Ids of enabled schedules whose next fire time has come, earliest first."""
        ids = await self._redis.zrangebyscore(self._key("schedule_due"), "-inf", now.timestamp(), 0, limit)
        return [str(i) for i in ids]

    @redis_call
    async def fire(
        self,
        schedule: ScheduleRecord,
        *,
        mode: str,
        following: datetime | None,
        record: FiringRecord | None,
        now: datetime,
    ) -> FireOutcome:
        """Claim the schedule's due fire time (``mode`` fire or skip) or record a forced run."""
        entry = "" if record is None else self._entry(record.task_id, schedule, mode, now)
        reply = await self._run(
            "schedule_fire",
            str(schedule.id),
            mode,
            schedule.version,
            "" if following is None else _epoch(following),
            "" if record is None else str(record.task_id),
            _epoch(now),
            "" if record is None else record.dumps(),
            entry,
            self._history,
        )
        return FireOutcome(reply[0])

    @staticmethod
    def _entry(task_id: UUID, schedule: ScheduleRecord, mode: str, now: datetime) -> str:
        forced = mode == "force"
        scheduled = None if forced or schedule.next_run_at is None else schedule.next_run_at.timestamp()
        return orjson.dumps(
            {
                "task_id": str(task_id),
                "scheduled_for": scheduled,
                "fired_at": now.timestamp(),
                "forced": forced,
            }
        ).decode()

    @redis_call
    async def settle(self, task_id: UUID) -> None:
        """The run's task is stored and its message confirmed: drop the firing record."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._key("schedule_firing"), str(task_id))
        pipe.zrem(self._key("schedule_firing_since"), str(task_id))
        await pipe.execute()

    @redis_call
    async def retake(self, *, cutoff: datetime, now: datetime, limit: int) -> list[FiringRecord]:
        """Firing records older than ``cutoff``, each renewed to ``now`` so one process retries it."""
        flat: list[str] = await self._run("schedule_retake", _epoch(cutoff), _epoch(now), limit)
        return [FiringRecord.loads(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    @redis_call
    async def runs(self, schedule_id: UUID, *, limit: int) -> list[RunEntry]:
        raw = await self._redis.lrange(self._key("schedule", str(schedule_id), "runs"), 0, limit - 1)
        entries = []
        for item in raw:
            data = orjson.loads(item)
            fired = _time(repr(data["fired_at"]))
            assert fired is not None
            scheduled = data.get("scheduled_for")
            entries.append(
                RunEntry(
                    data["task_id"],
                    None if scheduled is None else datetime.fromtimestamp(scheduled, UTC),
                    fired,
                    bool(data.get("forced")),
                )
            )
        return entries

    @redis_call
    async def run_states(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Each task's state: its own while Redis keeps it, ``creating`` while its firing record
        remains, else ``expired`` (past the retention time)."""
        if not task_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self._key("task", task_id), "state")
        pipe.hmget(self._key("schedule_firing"), list(task_ids))
        *states, firing = await pipe.execute()
        return {
            task_id: state or ("creating" if pending else "expired")
            for task_id, state, pending in zip(task_ids, states, firing, strict=True)
        }
