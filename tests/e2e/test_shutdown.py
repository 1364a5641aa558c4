"""Workers that stop mid-task: SIGTERM (drain within the grace period, else hand the task back)
and SIGKILL (the lease lapses and the timeout daemon hands the task to the other replica)."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support.blocking_api import BlockingApi
from tests.support.processes import ManagedProcess, Processes
from tests.support.recorder import Event, Recording
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "shutdown"


def _first_start(recording: Recording, tag: str) -> Event:
    """The start event of the task's first run, once some worker has begun it."""

    def started() -> list[Event]:
        return [e for e in recording.events(tag) if e.event == "start"]

    return eventually_sync(started, what=f"{tag} to start")[0]


def _assert_no_overlapping_runs(events: list[Event]) -> None:
    """No run of the task began before an earlier run had ended."""
    ordered = sorted(events, key=lambda e: e.at)
    live: set[int] = set()
    for event in ordered:
        if event.event == "start":
            assert not live, f"run {event.run} started while run(s) {sorted(live)} still ran: {ordered}"
            live.add(event.run)
        else:
            live.discard(event.run)


def test_sigterm_lets_a_running_task_finish_within_the_grace_period(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    worker = processes.worker("worker", SCHEDULER, env={"TASKBROKER_SHUTDOWN_GRACE": "30"})
    task = api.schedule(SCHEDULER, recording.call("slow", seconds=3))
    _first_start(recording, "slow")

    worker.send(signal.SIGTERM)

    assert worker.wait() == 0, worker.describe()
    assert worker.events("consumer.draining")
    final = api.task(task["id"])  # finished before the worker exited, so no waiting
    assert final["state"] == "complete", final
    assert final["attempts"] == 1
    assert recording.starts("slow") == 1
    assert recording.ends("slow") == 1
    assert {e.pid for e in recording.events("slow")} == {worker.pid}


def test_sigterm_past_the_grace_period_hands_the_task_back_without_counting_the_attempt(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    first = processes.worker("worker-1", SCHEDULER, env={"TASKBROKER_SHUTDOWN_GRACE": "0.5"})
    # Only the first run is long, so the replica that gets it back finishes it at once.
    task = api.schedule(SCHEDULER, recording.call("long", asynchronous=True, first_run_seconds=3600))
    assert _first_start(recording, "long").pid == first.pid

    first.send(signal.SIGTERM)

    assert first.wait() == 0, first.describe()
    (handed_back,) = first.events("consumer.handed_back")
    assert handed_back["tasks"] == 1
    assert handed_back["requeued"] == 1
    returned = api.task(task["id"])
    assert returned["state"] == "pending"
    assert returned["attempts"] == 0

    second = processes.worker("worker-2", SCHEDULER)
    final = api.wait_for_state(task["id"])
    assert final["state"] == "complete", final
    assert final["attempts"] == 1  # the released attempt is not counted
    events = recording.events("long")
    assert [(e.event, e.run, e.pid) for e in events] == [
        ("start", 1, first.pid),
        ("cancelled", 1, first.pid),
        ("start", 2, second.pid),
        ("end", 2, second.pid),
    ]


def test_sync_task_handed_back_at_shutdown_never_runs_twice_at_once(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    """A plain function runs in a thread that cancel cannot stop; handing its task to another
    replica while that thread still runs would make two live runs of one task."""
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    first = processes.worker("worker-1", SCHEDULER, env={"TASKBROKER_SHUTDOWN_GRACE": "0.5"})
    task = api.schedule(SCHEDULER, recording.call("sync-long", first_run_seconds=4))
    assert _first_start(recording, "sync-long").pid == first.pid
    second = processes.worker("worker-2", SCHEDULER)

    first.send(signal.SIGTERM)

    assert first.wait() == 0, first.describe()
    final = api.wait_for_state(task["id"])
    assert final["state"] == "complete", final
    eventually_sync(
        lambda: recording.ends("sync-long") == recording.starts("sync-long"), what="every run to end"
    )
    _assert_no_overlapping_runs(recording.events("sync-long"))
    assert second.returncode is None


def test_sigkill_mid_task_reruns_it_on_the_other_replica_after_the_lease_lapses(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    lease = {"TASKBROKER_LEASE": "2"}
    workers = {w.pid: w for w in (processes.worker(f"worker-{i}", SCHEDULER, env=lease) for i in (1, 2))}
    processes.timeout_daemon()
    task = api.schedule(SCHEDULER, recording.call("killed", asynchronous=True, first_run_seconds=3600))
    victim: ManagedProcess = workers.pop(_first_start(recording, "killed").pid)
    (survivor,) = workers.values()

    victim.send(signal.SIGKILL)

    assert victim.wait() == -signal.SIGKILL
    final = api.wait_for_state(task["id"])
    assert final["state"] == "complete", final
    assert final["attempts"] == 2
    assert [(e.event, e.run, e.pid) for e in recording.events("killed")] == [
        ("start", 1, victim.pid),
        ("start", 2, survivor.pid),
        ("end", 2, survivor.pid),
    ]


def test_api_exits_0_on_sigterm(processes: Processes, http: httpx.Client) -> None:
    api_process, url = processes.api()
    assert http.get(f"{url}/ready").status_code == 200

    api_process.send(signal.SIGTERM)

    assert api_process.wait() == 0, api_process.describe()
