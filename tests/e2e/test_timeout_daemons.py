"""Timeout daemons as operators run them: several replicas at once, at scale, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from datetime import timedelta

import pytest

from taskbroker.backends import redis_client
from taskbroker.models import SchedulerDefinition, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask, TaskStore
from tests.conftest import REDIS_URL
from tests.support.processes import Processes
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "expiring"
TASKS = 20_000
CREATE_BATCH = 1_000


async def _create_tasks_due_soon(settings: Settings, count: int) -> set[str]:
    """Pending tasks whose timeout passes a moment from now (no messages: no consumer runs here)."""
    store = TaskStore(redis_client(REDIS_URL), settings.key_prefix, settings.retention)
    try:
        await store.register_scheduler(SchedulerDefinition(name=SCHEDULER))
        now = utcnow()
        due = now + timedelta(seconds=2)
        ids: set[str] = set()
        for _ in range(0, count, CREATE_BATCH):
            batch = [NewTask(uuid.uuid4(), SCHEDULER, {"n": 1}, due) for _ in range(CREATE_BATCH)]
            await store.create(batch, now=now)
            ids |= {str(t.id) for t in batch}
        return ids
    finally:
        await store.close()


async def _states(settings: Settings, ids: set[str]) -> Counter[str]:
    client = redis_client(REDIS_URL)
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(f"{settings.key_prefix}:task:{task_id}", "state")
        return Counter(str(state) for state in await pipe.execute())
    finally:
        await client.aclose()


def test_two_daemons_expire_20000_tasks_each_exactly_once(processes: Processes, settings: Settings) -> None:
    ids = asyncio.run(_create_tasks_due_soon(settings, TASKS))
    daemons = [processes.timeout_daemon("daemon-a"), processes.timeout_daemon("daemon-b")]

    def all_expired() -> bool:
        logged = sum(len(d.events("task.timeout")) for d in daemons)
        return logged >= TASKS

    eventually_sync(all_expired, what=f"{TASKS} task.timeout events", deadline=120, interval=0.25)
    for daemon in daemons:
        daemon.send(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.describe()

    expirations = Counter(e["task_id"] for d in daemons for e in d.events("task.timeout"))
    assert set(expirations) == ids
    assert max(expirations.values()) == 1, [i for i, n in expirations.items() if n > 1][:10]
    assert asyncio.run(_states(settings, ids)) == Counter({"timeout": TASKS})
    split = {d.name: len(d.events("task.timeout")) for d in daemons}
    print(f"\n{TASKS} tasks expired once each; split between the daemons: {split}")


def test_daemon_finishes_its_sweep_and_exits_0_on_sigterm(processes: Processes) -> None:
    daemon = processes.timeout_daemon()

    daemon.send(signal.SIGTERM)

    assert daemon.wait() == 0, daemon.describe()
    assert daemon.events("timeout_daemon.stopped")
