"""The timeout daemon's sweep over a backlog larger than one batch, on the real servers and on
the embedded pair: several expire scripts are in flight at once, and each due task must still
end `timeout` exactly once while tasks not yet due stay live."""

from __future__ import annotations

import uuid
from datetime import timedelta

from taskbroker.backends import Backends
from taskbroker.events import EventLog
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon

SCHEDULER = "expiry"


async def test_one_sweep_expires_a_backlog_of_several_batches_each_task_once(
    settings: Settings, backends: Backends
) -> None:
    store = backends.store
    await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    now = utcnow()
    due = [NewTask(uuid.uuid4(), SCHEDULER, {"n": n}, now - timedelta(seconds=1)) for n in range(11)]
    later = [NewTask(uuid.uuid4(), SCHEDULER, {"n": n}, now + timedelta(hours=1)) for n in range(2)]
    await store.create([*due, *later], now=now)
    daemon = TimeoutDaemon(
        settings=settings, store=store, events=backends.events, broker=backends.broker, batch=3
    )

    first = await daemon.sweep()
    second = await daemon.sweep()

    assert (first.expired, second.expired) == (11, 0)
    assert {(await store.get(t.id)).state for t in due} == {TaskState.TIMEOUT}
    assert {(await store.get(t.id)).state for t in later} == {TaskState.PENDING}
    assert await store.live_count(SCHEDULER) == 2
    assert await store.live_deadline_count() == 2
    timeouts = [
        e for e in await EventLog(store.redis, store.key_prefix).read_after("0-0") if e.state == "timeout"
    ]
    assert sorted(str(e.task_id) for e in timeouts) == sorted(str(t.id) for t in due)
