"""A small deployment of real processes: one API, two worker replicas, one timeout daemon."""

from __future__ import annotations

import signal
from collections import Counter

import httpx
import pytest

from tests.support.blocking_api import BlockingApi
from tests.support.processes import Processes
from tests.support.recorder import Recording
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "cluster"
SINGLES = 50
BATCHES = 3
BATCH_SIZE = 150
TOTAL = SINGLES + BATCHES * BATCH_SIZE


def test_500_tasks_over_two_replicas_all_complete_each_run_exactly_once(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    workers = [processes.worker(f"worker-{i}", SCHEDULER, concurrency=4) for i in (1, 2)]
    daemon = processes.timeout_daemon()
    assert api.scheduler(SCHEDULER)["consumers"] == 2

    tags = [f"task-{i}" for i in range(TOTAL)]
    ids = [api.schedule(SCHEDULER, recording.call(tag))["id"] for tag in tags[:SINGLES]]
    for start in range(SINGLES, TOTAL, BATCH_SIZE):
        batch = api.schedule_batch(
            SCHEDULER, [recording.call(tag) for tag in tags[start : start + BATCH_SIZE]]
        )
        ids += [t["id"] for t in batch]
    assert len(set(ids)) == TOTAL

    eventually_sync(
        lambda: api.scheduler(SCHEDULER)["live_tasks"] == 0,
        what="every task to reach a final state",
        deadline=120,
        interval=0.2,
    )

    finals = [api.task(task_id) for task_id in ids]
    assert Counter(t["state"] for t in finals) == {"complete": TOTAL}
    assert [t["result"]["tag"] for t in finals] == tags
    assert Counter(t["attempts"] for t in finals) == {1: TOTAL}

    events = recording.events()
    starts = Counter(e.tag for e in events if e.event == "start")
    ends = Counter(e.tag for e in events if e.event == "end")
    assert starts == dict.fromkeys(tags, 1)
    assert ends == dict.fromkeys(tags, 1)
    pids = Counter(e.pid for e in events if e.event == "end")
    assert set(pids) == {w.pid for w in workers}, f"runs per worker pid: {dict(pids)}"

    # The worker replicas and the daemon drain and exit 0 on SIGTERM (the API: tests/e2e/test_shutdown.py).
    for process in (*workers, daemon):
        process.send(signal.SIGTERM)
    for process in (*workers, daemon):
        assert process.wait() == 0, process.describe()
        assert process.events("consumer.stopped" if process in workers else "timeout_daemon.stopped")
