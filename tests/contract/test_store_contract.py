"""The TaskStore's state transitions (one Lua script each), run against the real Redis and the
embedded fakeredis alike: claims, leases, outcomes, aborts, expiry, schedulers, listing."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest

from taskbroker.backends import Backends
from taskbroker.errors import (
    SchedulerBusy,
    SchedulerConflict,
    TaskAlreadyFinished,
    TaskNotFound,
    UnknownScheduler,
)
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.store import ClaimOutcome, ConsumerIdentity, NewTask, TaskStore
from tests.support.waiting import eventually

SCHEDULER = "contract"
LEASE = 30.0
MAX_ATTEMPTS = 3


@pytest.fixture
async def store(backends: Backends) -> TaskStore:
    await backends.store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    return backends.store


async def _new(
    store: TaskStore, *, timeout_in: float = 3600, owner: str = "", attributes: dict[str, Any] | None = None
) -> str:
    attributes = {"k": "v"} if attributes is None else attributes
    task = NewTask(uuid.uuid4(), SCHEDULER, attributes, utcnow() + timedelta(seconds=timeout_in), owner)
    await store.create([task], now=utcnow())
    return str(task.id)


async def _claim(store: TaskStore, task_id: str, consumer: str = "c1", lease: float = LEASE) -> ClaimOutcome:
    claim = await store.claim(task_id, consumer=consumer, lease=lease, max_attempts=MAX_ATTEMPTS)
    return claim.outcome


async def test_created_task_is_pending_with_its_attributes_and_owner(store: TaskStore) -> None:
    task_id = await _new(store, owner="tok1")

    task = await store.get(uuid.UUID(task_id))

    assert task.state is TaskState.PENDING
    assert task.attributes == {"k": "v"}
    assert task.attempts == 0
    assert task.owner == "tok1"


async def test_creating_on_an_unknown_scheduler_stores_nothing(store: TaskStore) -> None:
    good = NewTask(uuid.uuid4(), SCHEDULER, {}, utcnow() + timedelta(hours=1))
    bad = NewTask(uuid.uuid4(), "nope", {}, utcnow() + timedelta(hours=1))

    with pytest.raises(UnknownScheduler):
        await store.create([good, bad], now=utcnow())
    with pytest.raises(TaskNotFound):
        await store.get(good.id)


async def test_claim_makes_a_task_running_under_the_consumers_lease(store: TaskStore) -> None:
    task_id = await _new(store)

    claim = await store.claim(task_id, consumer="c1", lease=LEASE, max_attempts=MAX_ATTEMPTS)

    assert claim.outcome is ClaimOutcome.CLAIMED
    assert claim.task is not None
    assert claim.task.state is TaskState.RUNNING
    assert claim.task.attempts == 1


async def test_a_live_lease_is_never_taken_over(store: TaskStore) -> None:
    task_id = await _new(store)
    assert await _claim(store, task_id, "c1") is ClaimOutcome.CLAIMED

    assert await _claim(store, task_id, "c2") is ClaimOutcome.BUSY
    assert await _claim(store, task_id, "c1") is ClaimOutcome.BUSY


async def test_a_lapsed_lease_is_taken_over_and_the_attempt_counted(store: TaskStore) -> None:
    task_id = await _new(store)
    assert await _claim(store, task_id, "c1", lease=0.05) is ClaimOutcome.CLAIMED

    async def taken_over() -> bool:
        return await _claim(store, task_id, "c2") is ClaimOutcome.CLAIMED

    await eventually(taken_over, what="the lapsed lease to be taken over")
    task = await store.get(uuid.UUID(task_id))
    assert task.attempts == 2
    assert await store.renew([task_id], consumer="c1", lease=LEASE) == [task_id]
    assert await store.finish(task_id, consumer="c1", state=TaskState.COMPLETE) is TaskState.RUNNING


async def test_claim_drops_gone_final_and_expired_tasks(store: TaskStore) -> None:
    finished = await _new(store)
    await _claim(store, finished)
    await store.finish(finished, consumer="c1", state=TaskState.COMPLETE, result=1)
    expired = await _new(store, timeout_in=-1)  # the daemon has not swept it yet

    assert await _claim(store, str(uuid.uuid4())) is ClaimOutcome.GONE
    assert await _claim(store, finished) is ClaimOutcome.FINAL
    assert await _claim(store, expired) is ClaimOutcome.EXPIRED
    assert (await store.get(uuid.UUID(expired))).state is TaskState.TIMEOUT


async def test_a_task_whose_attempts_are_used_up_fails_with_an_explanation(store: TaskStore) -> None:
    task_id = await _new(store)
    for attempt in range(MAX_ATTEMPTS):

        async def claimed(consumer: str = f"c{attempt}") -> bool:
            return await _claim(store, task_id, consumer, lease=0.02) is ClaimOutcome.CLAIMED

        await eventually(claimed, what=f"attempt {attempt + 1}")

    async def exhausted() -> bool:
        return await _claim(store, task_id, "last") is ClaimOutcome.EXHAUSTED

    await eventually(exhausted, what="the claim to give up")
    task = await store.get(uuid.UUID(task_id))
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert f"gave up after {MAX_ATTEMPTS} attempts" in task.error


async def test_finish_records_the_outcome_only_for_the_lease_holder(store: TaskStore) -> None:
    task_id = await _new(store)
    await _claim(store, task_id, "c1")

    assert await store.finish(task_id, consumer="intruder", state=TaskState.COMPLETE) is TaskState.RUNNING
    assert await store.finish(task_id, consumer="c1", state=TaskState.COMPLETE, result={"r": 1}) is None

    task = await store.get(uuid.UUID(task_id))
    assert task.state is TaskState.COMPLETE
    assert task.result == {"r": 1}


async def test_a_late_outcome_never_overwrites_abort(store: TaskStore) -> None:
    task_id = await _new(store)
    await _claim(store, task_id, "c1")

    aborted = await store.abort(uuid.UUID(task_id), now=utcnow())
    kept = await store.finish(task_id, consumer="c1", state=TaskState.COMPLETE, result=1)

    assert aborted.state is TaskState.ABORTED
    assert kept is TaskState.ABORTED
    assert (await store.get(uuid.UUID(task_id))).result is None
    assert await store.renew([task_id], consumer="c1", lease=LEASE) == [task_id]


async def test_aborting_a_final_task_is_refused(store: TaskStore) -> None:
    task_id = await _new(store)
    await store.abort(uuid.UUID(task_id), now=utcnow())

    with pytest.raises(TaskAlreadyFinished):
        await store.abort(uuid.UUID(task_id), now=utcnow())
    assert await _claim(store, task_id) is ClaimOutcome.FINAL


async def test_renew_keeps_held_leases_and_reports_lost_ones(store: TaskStore) -> None:
    held, lost = await _new(store), await _new(store)
    await _claim(store, held, "c1")
    await _claim(store, lost, "c1")
    await store.abort(uuid.UUID(lost), now=utcnow())

    assert await store.renew([held, lost], consumer="c1", lease=LEASE) == [lost]


async def test_released_tasks_lapse_at_once_without_counting_the_attempt(store: TaskStore) -> None:
    task_id = await _new(store)
    await _claim(store, task_id, "c1")

    refs = await store.release([task_id], consumer="c1")
    lapsed = await store.lapsed(limit=10)
    moved = await store.requeue([task_id])

    assert [r.id for r in refs] == [task_id]
    assert [r.id for r in lapsed] == [task_id]
    assert moved == 1
    task = await store.get(uuid.UUID(task_id))
    assert task.state is TaskState.PENDING
    assert task.attempts == 0
    assert await store.release([task_id], consumer="c1") == []


async def test_requeue_leaves_a_task_that_was_claimed_again_alone(store: TaskStore) -> None:
    task_id = await _new(store)
    await _claim(store, task_id, "c1", lease=0.02)
    await eventually(lambda: _claimed_by(store, task_id, "c2"), what="a takeover")

    assert await store.requeue([task_id]) == 0
    assert (await store.get(uuid.UUID(task_id))).state is TaskState.RUNNING


async def _claimed_by(store: TaskStore, task_id: str, consumer: str) -> bool:
    return await _claim(store, task_id, consumer) is ClaimOutcome.CLAIMED


async def test_expire_due_times_out_each_due_task_once(store: TaskStore) -> None:
    due = [await _new(store, timeout_in=1) for _ in range(5)]
    later = await _new(store, timeout_in=3600)
    await _claim(store, due[0], "c1")
    after_due = time.time() + 2

    first = await store.expire_due(limit=100, now=after_due)
    second = await store.expire_due(limit=100, now=after_due)

    assert sorted(e.id for e in first) == sorted(due)
    assert second == []
    (running,) = [e for e in first if e.id == due[0]]
    assert running.previous_state is TaskState.RUNNING
    assert running.consumer == "c1"
    assert (await store.get(uuid.UUID(later))).state is TaskState.PENDING
    assert await store.finish(due[0], consumer="c1", state=TaskState.COMPLETE) is TaskState.TIMEOUT


@pytest.mark.parametrize(
    "attributes",
    [{"k": "v"}, {"k": "v" * 100}],
    ids=["short attributes, in the hash", "long attributes, in their own key"],
)
async def test_finished_tasks_expire_after_the_retention_time(
    store: TaskStore, backends: Backends, attributes: dict[str, Any]
) -> None:
    task_id = await _new(store, attributes=attributes)
    await store.abort(uuid.UUID(task_id), now=utcnow())

    ttl_ms = await backends.store.redis.pttl(f"{store.key_prefix}:task:{task_id}")
    attributes_ttl_ms = await backends.store.redis.pttl(f"{store.key_prefix}:attributes:{task_id}")

    assert 0 < ttl_ms <= 3600 * 1000
    if len(orjson.dumps(attributes)) <= 64:
        assert attributes_ttl_ms == -2  # no key of their own
    else:
        assert 0 < attributes_ttl_ms <= 3600 * 1000
    assert (await store.get(uuid.UUID(task_id))).attributes == attributes


async def test_scheduler_registration_is_idempotent_and_conflicts_are_refused(store: TaskStore) -> None:
    definition = SchedulerDefinition(name="reg", runtime="inline", description="a")

    assert await store.register_scheduler(definition) is True
    assert await store.register_scheduler(definition) is False
    with pytest.raises(SchedulerConflict):
        await store.register_scheduler(SchedulerDefinition(name="reg", runtime="inline", description="b"))
    assert await store.get_scheduler("reg") == definition


async def test_deleting_a_scheduler_with_live_tasks_needs_force_which_aborts_them(store: TaskStore) -> None:
    task_id = await _new(store)

    with pytest.raises(SchedulerBusy):
        await store.delete_scheduler(SCHEDULER, force=False, now=utcnow())
    aborted = await store.delete_scheduler(SCHEDULER, force=True, now=utcnow())

    assert aborted == [task_id]
    assert (await store.get(uuid.UUID(task_id))).state is TaskState.ABORTED
    with pytest.raises(UnknownScheduler):
        await store.get_scheduler(SCHEDULER)
    with pytest.raises(UnknownScheduler):
        await store.delete_scheduler(SCHEDULER, force=False, now=utcnow())


async def test_listing_pages_hold_at_most_limit_and_cover_every_live_task(store: TaskStore) -> None:
    live = {await _new(store) for _ in range(25)}
    finished = await _new(store)
    await store.abort(uuid.UUID(finished), now=utcnow())

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_live(scheduler=SCHEDULER, state=None, limit=7, cursor=cursor)
        assert len(page.tasks) <= 7
        seen += [str(t.id) for t in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert sorted(seen) == sorted(live)


def _identity(consumer: str = "c1") -> ConsumerIdentity:
    return ConsumerIdentity(
        id=consumer,
        scheduler=SCHEDULER,
        runtime="inline",
        host="host-1",
        pid=42,
        version="0.0.0",
        concurrency=2,
        started_at=time.time(),
    )


async def test_a_heartbeat_renews_like_renew_and_lists_only_the_tasks_still_held(store: TaskStore) -> None:
    held, aborted = await _new(store), await _new(store)
    assert await _claim(store, held) is ClaimOutcome.CLAIMED
    assert await _claim(store, aborted) is ClaimOutcome.CLAIMED
    await store.abort(uuid.UUID(aborted), now=utcnow())

    beat = await store.heartbeat(_identity(), [held, aborted], lease=LEASE, paused=False)
    (listed,) = await store.list_consumers()

    assert beat.lost == [aborted]
    assert beat.paused is False
    assert (listed.id, listed.scheduler, listed.pid, listed.concurrency) == ("c1", SCHEDULER, 42, 2)
    assert [str(i) for i in listed.running] == [held]
    assert (await store.list_consumers(scheduler="other")) == []


async def test_a_heartbeat_says_paused_while_the_scheduler_is_paused(store: TaskStore) -> None:
    await store.set_paused(SCHEDULER, True)
    paused = await store.heartbeat(_identity(), [], lease=LEASE, paused=False)
    await store.set_paused(SCHEDULER, False)
    resumed = await store.heartbeat(_identity(), [], lease=LEASE, paused=True)

    assert (paused.paused, resumed.paused) == (True, False)
    assert (await store.list_consumers())[0].paused is True  # as the consumer last reported it
    with pytest.raises(UnknownScheduler):
        await store.set_paused("nosuch", True)


async def test_a_consumer_record_expires_a_lease_after_its_last_heartbeat_or_at_once_when_forgotten(
    store: TaskStore,
) -> None:
    await store.heartbeat(_identity("stays"), [], lease=LEASE, paused=False)
    await store.heartbeat(_identity("forgotten"), [], lease=LEASE, paused=False)
    await store.heartbeat(_identity("dies"), [], lease=0.2, paused=False)

    await store.forget_consumer("forgotten")
    assert {c.id for c in await store.list_consumers()} >= {"stays"}
    assert "forgotten" not in {c.id for c in await store.list_consumers()}

    async def only_the_living() -> bool:
        return [c.id for c in await store.list_consumers()] == ["stays"]

    await eventually(only_the_living, what="the record that was not renewed to expire")
