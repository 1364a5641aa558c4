"""A task that kills its consumer on every attempt ends `failed` after max_attempts and does not
block the tasks queued behind it."""

from __future__ import annotations

import httpx
import pytest

from tests.support.blocking_api import FINAL_STATES, BlockingApi
from tests.support.poison import MODULE as POISON_MODULE
from tests.support.processes import TEST_ALLOW, ManagedProcess, Processes
from tests.support.recorder import Recording
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "poison"
MAX_ATTEMPTS = 3


def test_task_that_kills_its_consumer_every_time_fails_after_max_attempts(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    processes.timeout_daemon()
    worker_env = {"TASKBROKER_LEASE": "1", "TASKBROKER_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}

    def start_worker(number: int) -> ManagedProcess:
        return processes.worker(
            f"worker-{number}",
            SCHEDULER,
            concurrency=1,
            allow=(*TEST_ALLOW, POISON_MODULE),
            env=worker_env,
        )

    poison = api.schedule(SCHEDULER, {"function": f"{POISON_MODULE}:kill_my_consumer"})
    healthy = api.schedule(SCHEDULER, recording.call("behind-the-poison"))
    workers = [start_worker(0)]

    def final_after_restarting_dead_workers() -> dict[str, object] | None:
        """What a process supervisor does: start a new worker whenever the last one died."""
        if workers[-1].returncode is not None:
            workers.append(start_worker(len(workers)))
        task = api.task(poison["id"])
        return task if task["state"] in FINAL_STATES else None

    final = eventually_sync(final_after_restarting_dead_workers, what="the poison task to end", interval=0.1)

    assert final is not None
    assert final["state"] == "failed", final
    assert final["attempts"] == MAX_ATTEMPTS
    assert f"gave up after {MAX_ATTEMPTS} attempts" in str(final["error"])
    killed = [w for w in workers if w.returncode is not None]
    assert len(killed) == MAX_ATTEMPTS, [w.describe() for w in workers]
    assert api.wait_for_state(healthy["id"])["state"] == "complete"
    assert recording.starts("behind-the-poison") == 1
