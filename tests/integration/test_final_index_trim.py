"""The indexes of retained final tasks (what GET /tasks?state= lists) are trimmed by retention
when a task is added to them, and by the timeout daemon for a scheduler that fell idle, whose
index no new final task would trim: its entries must not outlive the tasks they name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from taskbroker.backends import Backends
from taskbroker.models import SchedulerDefinition
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon

SCHEDULER = "idle-since"
NOOP = {"function": "taskbroker.runtimes.builtin:noop"}


async def _timed_out_at(backends: Backends, at: datetime) -> str:
    """A task of SCHEDULER that timed out at ``at`` (so its index entry is scored ``at``)."""
    task = NewTask(uuid.uuid4(), SCHEDULER, NOOP, at - timedelta(minutes=1))
    await backends.store.create([task], now=at - timedelta(minutes=2))
    (expired,) = await backends.store.expire_due(limit=10, now=at.timestamp())
    assert expired.id == str(task.id)
    return str(task.id)


async def test_a_sweep_drops_an_idle_schedulers_final_entries_past_retention_and_keeps_the_rest(
    settings: Settings, real: Backends
) -> None:
    await real.store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
    now = datetime.now(UTC)
    retention = settings.failed_retention  # what timed-out tasks are kept
    past = await _timed_out_at(real, now - retention - timedelta(hours=1))
    within = await _timed_out_at(real, now - retention + timedelta(hours=1))
    index = f"{settings.key_prefix}:final:{SCHEDULER}:timeout"
    # Adding `within` trimmed by its own time, when `past` was still retained: both are there.
    assert set(await real.store.redis.zrange(index, 0, -1)) == {past, within}
    daemon = TimeoutDaemon(settings=settings, store=real.store, events=real.events, broker=real.broker)

    report = await daemon.sweep()

    assert report.trimmed == 1
    assert await real.store.redis.zrange(index, 0, -1) == [within]
    again = await daemon.sweep()  # within a minute of the last trim: none is made
    assert again.trimmed == 0
