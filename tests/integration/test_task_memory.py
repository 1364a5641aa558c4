"""How a live task is laid out in Redis: the layout is what keeps it under 1 KiB (README,
Performance), so it is specified here against the real server, whose encodings are the point."""

from __future__ import annotations

import uuid
from datetime import timedelta

from taskbroker.backends import Backends
from taskbroker.models import SchedulerDefinition, utcnow
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
