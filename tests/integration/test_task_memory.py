"""How a live task is laid out in Redis: the layout is what keeps it under 1 KiB
(docs/performance.md), so it is specified here against the real server, whose encodings are the point."""

from __future__ import annotations

import uuid
from datetime import timedelta

from taskbroker.backends import Backends
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.store import NewTask

SCHEDULER = "memory"
ATTRIBUTES = {"function": "bench.noop:run", "kwargs": {"payload": "x" * 160}}


async def test_a_live_task_hash_stays_a_listpack_with_long_attributes(real: Backends) -> None:
    store = real.store
    await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    task = NewTask(
        uuid.uuid4(), SCHEDULER, ATTRIBUTES, utcnow() + timedelta(hours=1), "tok1", callback_url=""
    )
    await store.create([task], now=utcnow())
    claim = await store.claim(str(task.id), consumer="c1", lease=30, max_attempts=3)

    encoding = await store.redis.object("ENCODING", f"{store.key_prefix}:task:{task.id}")

    assert encoding == "listpack"
    assert claim.task is not None
    assert claim.task.attributes == ATTRIBUTES
    assert (await store.get(task.id)).attributes == ATTRIBUTES


SHORT = {"function": "taskbroker.runtimes.builtin:noop"}


async def test_short_attributes_stay_in_the_hash_and_expire_with_it(real: Backends) -> None:
    store = real.store
    await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    running = NewTask(uuid.uuid4(), SCHEDULER, SHORT, utcnow() + timedelta(hours=1), "tok1")
    due = NewTask(uuid.uuid4(), SCHEDULER, SHORT, utcnow() - timedelta(seconds=1), "tok1")
    await store.create([running, due], now=utcnow())
    task_key = f"{store.key_prefix}:task:{running.id}"

    assert await store.redis.exists(f"{store.key_prefix}:attributes:{running.id}") == 0
    assert await store.redis.object("ENCODING", task_key) == "listpack"
    claim = await store.claim(str(running.id), consumer="c1", lease=30, max_attempts=3)
    assert claim.task is not None
    assert claim.task.attributes == SHORT

    await store.finish(str(running.id), consumer="c1", state=TaskState.COMPLETE, result=1)
    (expired,) = await store.expire_due(limit=10)

    assert expired.id == str(due.id)
    for task in (running, due):
        assert await store.redis.pttl(f"{store.key_prefix}:task:{task.id}") > 0  # retention started
        assert (await store.get(task.id)).attributes == SHORT
    assert await store.redis.keys(f"{store.key_prefix}:attributes:*") == []


async def test_discarding_tasks_leaves_no_key_of_either_layout(real: Backends) -> None:
    store = real.store
    await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    tasks = [
        NewTask(uuid.uuid4(), SCHEDULER, attributes, utcnow() + timedelta(hours=1), "tok1")
        for attributes in (SHORT, ATTRIBUTES)
    ]
    await store.create(tasks, now=utcnow())
    assert len(await store.redis.keys(f"{store.key_prefix}:attributes:*")) == 1  # the long one's

    await store.discard([t.id for t in tasks])

    assert await store.redis.keys(f"{store.key_prefix}:task:*") == []
    assert await store.redis.keys(f"{store.key_prefix}:attributes:*") == []
