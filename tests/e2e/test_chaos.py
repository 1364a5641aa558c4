"""The test that proves the guarantees: tasks keep flowing while consumers are SIGKILLed and
replaced, the API is SIGKILLed in the middle of batches and replaced, RabbitMQ and Redis
connections are cut, and two timeout daemons run. Every task carries an idempotency key, and the
client retries a batch (same keys) until it is answered, as a careful client would. At the end
every task is accepted and final, none is lost, no task ever had two runs at the same time, no
task had more attempts than it is allowed, and no stored task is left live: what a killed API
stored without publishing, or what a Redis cut answered 503 after storing, was adopted by a
retry or republished by reconciliation.

Every third batch is delayed a little and carries a retry policy, and half of its tasks fail
their first two runs on purpose: retries and releases of delayed tasks run through the chaos too.

`.ci/run` runs the bounded variant (2,000 tasks); `pytest -m soak` runs a longer one.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from taskbroker.settings import Settings
from tests.conftest import AMQP_URL, REDIS_URL, proxied_url
from tests.support.blocking_api import FINAL_STATES, BlockingApi
from tests.support.processes import ManagedProcess, Processes
from tests.support.recorder import Recording, overlapping_runs
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually_sync

SCHEDULERS = ("chaos-a", "chaos-b")
REPLICAS = ("chaos-a", "chaos-a", "chaos-b")  # three consumers over the two schedulers
BATCH = 50
MAX_ATTEMPTS = 5
"""TASKBROKER_MAX_ATTEMPTS of the run: what a task without a retry policy may take."""
RETRY = {"max_attempts": 7, "initial_delay": 0.1, "backoff_factor": 2, "max_delay": 0.5}
"""The retry policy of every third batch: more attempts than MAX_ATTEMPTS, so the check that none
exceeds its own allowance can tell the two apart."""
FAILED_RUNS = 2


@dataclass(frozen=True)
class Plan:
    tasks: int
    chaos_seconds: float
    schedule_seconds: float = 12.0  # the client offers its batches over this window
    kill_every: float = 1.0
    amqp_cut: tuple[float, float] = (3.0, 6.0)  # seconds into the chaos: cut, restore
    redis_cut: tuple[float, float] = (9.0, 12.0)
    api_kills: tuple[float, ...] = (1.5, 7.0)  # seconds into the chaos, outside the cuts


@dataclass
class Ledger:
    """What the test did and what the API accepted, for the final accounting."""

    accepted: dict[str, str] = field(default_factory=dict)  # task id -> recorder tag
    answered_batches: int = 0
    rejected_batches: int = 0  # answered 503 or 409, then retried
    unanswered_batches: int = 0  # the connection broke (the API was killed), then retried
    killed_at: dict[int, float] = field(default_factory=dict)  # pid -> when it was SIGKILLed
    started_workers: int = 0
    api_kills: int = 0
    sending: threading.Event = field(default_factory=threading.Event)
    """Set while the client has a batch request out: the API is killed only then."""


def _schedule_all(api: BlockingApi, recording: Recording, plan: Plan, ledger: Ledger) -> None:
    """Schedule in batches like a careful client would: every task has an idempotency key (its
    tag), and a batch answered 503 or 409, or not answered at all, is sent again with the same
    keys until it is answered 201 or 200 (to whichever API is up: ``api.url`` changes when the
    test replaces a killed API)."""
    rng = random.Random(7)
    began = time.monotonic()
    batches = -(-plan.tasks // BATCH)
    for number, start in enumerate(range(0, plan.tasks, BATCH)):
        # Offer the batches evenly over the scheduling window, so some meet the cuts.
        time.sleep(max(0.0, began + number * plan.schedule_seconds / batches - time.monotonic()))
        scheduler = SCHEDULERS[(start // BATCH) % len(SCHEDULERS)]
        tags = [f"t{n}" for n in range(start, min(start + BATCH, plan.tasks))]
        retried = _retried_batch(start)
        calls = [
            recording.call(
                tag,
                asynchronous=True,
                seconds=rng.uniform(0.02, 0.2),
                fail_runs=FAILED_RUNS if retried and n % 2 == 0 else 0,
            )
            for n, tag in enumerate(tags)
        ]
        extra: dict[str, object] = {"retry": RETRY, "delay": 0.3} if retried else {}
        body = {
            "tasks": [
                {"scheduler": scheduler, "attributes": call, "key": tag, **extra}
                for call, tag in zip(calls, tags, strict=True)
            ]
        }
        while True:
            ledger.sending.set()
            try:
                response = api.http.post(f"{api.url}/task/schedule/batch", json=body, timeout=30)
            except httpx.TransportError:
                ledger.unanswered_batches += 1
                time.sleep(0.2)  # a client's backoff before retrying
                continue
            finally:
                ledger.sending.clear()
            if response.status_code in (200, 201):
                for task, tag in zip(response.json()["tasks"], tags, strict=True):
                    ledger.accepted[task["id"]] = tag
                ledger.answered_batches += 1
                break
            assert response.status_code in (409, 503), response.text
            ledger.rejected_batches += 1
            time.sleep(0.2)  # a client's backoff before retrying the 503


def _retried_batch(start: int) -> bool:
    return (start // BATCH) % 3 == 0


def _allowed_attempts(tag: str) -> int:
    """The larger of TASKBROKER_MAX_ATTEMPTS and the task's policy (docs/retries.md)."""
    retried = _retried_batch(int(tag.removeprefix("t")) // BATCH * BATCH)
    return max(MAX_ATTEMPTS, int(RETRY["max_attempts"])) if retried else MAX_ATTEMPTS


def _start_worker(processes: Processes, scheduler: str, ledger: Ledger) -> ManagedProcess:
    """Not awaited: a replacement may start while a server is cut off, as in production."""
    ledger.started_workers += 1
    return processes.start(
        f"worker-{ledger.started_workers}",
        "worker",
        "--scheduler",
        scheduler,
        "--concurrency",
        "4",
        "--allow",
        "tests.support.recorder",
    )


def _live_task_ids(settings: Settings) -> list[str]:
    """Every task Redis still holds as live (in the deadline index), whoever stored it."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [str(member) for member in client.zrange(f"{settings.key_prefix}:deadlines", 0, -1)]
    finally:
        client.close()


def _kill_api_mid_batch(
    processes: Processes, api: BlockingApi, current: ManagedProcess, ledger: Ledger, rng: random.Random
) -> ManagedProcess:
    """SIGKILL the API while the client has a batch out, then start another and point the
    client at it."""
    ledger.sending.wait(timeout=5)
    time.sleep(rng.uniform(0.0, 0.03))  # somewhere inside the request, not a wait for an event
    current.send(signal.SIGKILL)
    ledger.api_kills += 1
    replacement, url = processes.api(f"api-{ledger.api_kills + 1}")
    api.url = url
    return replacement


def _final_states(settings: Settings, ids: list[str]) -> dict[str, dict[str, str]]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(f"{settings.key_prefix}:task:{task_id}", "state", "error", "attempts")
        found = pipe.execute()
    finally:
        client.close()
    return {
        task_id: {"state": state, "error": error or "", "attempts": attempts}
        for task_id, (state, error, attempts) in zip(ids, found, strict=True)
        if state is not None
    }


def _run_chaos(
    plan: Plan,
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
    redis_proxy: TcpProxy,
    amqp_proxy: TcpProxy,
) -> None:
    processes.env.update(
        TASKBROKER_REDIS_URL=proxied_url(REDIS_URL, redis_proxy),
        TASKBROKER_AMQP_URL=proxied_url(AMQP_URL, amqp_proxy),
        TASKBROKER_LEASE="2",
        TASKBROKER_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        TASKBROKER_REPUBLISH_AFTER="3",
    )
    api_process, url = processes.api()
    api = BlockingApi(http, url)
    for scheduler in SCHEDULERS:
        api.register(scheduler)
    daemons = [processes.timeout_daemon("daemon-a"), processes.timeout_daemon("daemon-b")]
    ledger = Ledger()
    workers = [_start_worker(processes, scheduler, ledger) for scheduler in REPLICAS]
    for worker in workers:
        worker.wait_for_event("consumer.subscribed")

    client = threading.Thread(target=_schedule_all, args=(api, recording, plan, ledger), daemon=True)
    client.start()
    rng = random.Random(11)
    began = time.monotonic()
    next_kill = plan.kill_every
    cuts = [
        (plan.amqp_cut[0], amqp_proxy.cut),
        (plan.amqp_cut[1], amqp_proxy.restore),
        (plan.redis_cut[0], redis_proxy.cut),
        (plan.redis_cut[1], redis_proxy.restore),
    ]
    api_kills = list(plan.api_kills)
    while (elapsed := time.monotonic() - began) < plan.chaos_seconds:
        while cuts and cuts[0][0] <= elapsed:
            cuts.pop(0)[1]()
        if api_kills and api_kills[0] <= elapsed and client.is_alive():
            api_kills.pop(0)
            api_process = _kill_api_mid_batch(processes, api, api_process, ledger, rng)
        if elapsed >= next_kill:
            victim = workers.pop(rng.randrange(len(workers)))
            ledger.killed_at[victim.pid] = time.time()
            victim.send(signal.SIGKILL)
            workers.append(_start_worker(processes, victim.args[2], ledger))
            next_kill += plan.kill_every
        time.sleep(0.05)  # the chaos schedule's clock tick, not a wait for an event
    for _, action in cuts:  # a plan shorter than its cuts still ends with both servers back
        action()
    client.join(timeout=300)
    assert not client.is_alive(), "the scheduling client never finished"

    ids = list(ledger.accepted)

    def all_final() -> bool:
        states = _final_states(settings, ids)
        return len(states) == len(ids) and all(s["state"] in FINAL_STATES for s in states.values())

    eventually_sync(all_final, what="every accepted task to reach a final state", deadline=300, interval=0.5)
    # What a killed API or a lost reply left stored but unpublished is final too: reconciliation
    # republished it within TASKBROKER_REPUBLISH_AFTER (3 s here) plus a sweep.
    eventually_sync(
        lambda: _live_task_ids(settings) == [], what="no stored task left live", deadline=60, interval=0.5
    )

    final = _final_states(settings, ids)
    states = Counter(s["state"] for s in final.values())
    events = recording.events()
    ended_tags = {e.tag for e in events if e.event == "end"}
    runs = Counter(e.tag for e in events if e.event == "start")
    started = processes_started(processes)
    fenced = sum(len(p.events("task.fenced")) for p in started)
    republished = sum(len(p.events("task.republished")) for p in started)
    adopted = sum(len(p.events("task.adopted")) for p in started)
    print(
        f"\nchaos: {plan.tasks} tasks offered, {len(ids)} accepted in {ledger.answered_batches} batches "
        f"({ledger.rejected_batches} answers of 503/409 and {ledger.unanswered_batches} unanswered "
        f"requests retried; {ledger.api_kills} APIs SIGKILLed mid-batch); "
        f"{republished} tasks republished by reconciliation, {adopted} adopted by a retry; "
        f"final states {dict(states)}; {sum(runs.values())} runs, "
        f"{sum(1 for n in runs.values() if n > 1)} tasks ran more than once; "
        f"{len(ledger.killed_at)} consumers SIGKILLed, {ledger.started_workers} started; "
        f"{fenced} runs fenced during the Redis cut; daemons alive: "
        f"{sum(d.returncode is None for d in daemons)}"
    )
    assert len(final) == len(ids), "accepted tasks missing from Redis: lost"
    assert set(states) <= {"complete", "failed"}, states
    for task_id, state in final.items():
        tag = ledger.accepted[task_id]
        assert int(state["attempts"]) <= _allowed_attempts(tag), (task_id, tag, state)
        if state["state"] == "failed":
            # Crashes used up its attempts, or (a task failing on purpose) its policy's.
            assert "gave up after" in state["error"] or state["error"].startswith("RuntimeError: failure"), (
                task_id,
                state,
            )
        else:
            assert tag in ended_tags, f"{task_id} complete but its run never ended"
    assert overlapping_runs(events, ledger.killed_at) == []
    assert all(d.returncode is None for d in daemons), [d.describe() for d in daemons]
    # A batch whose tasks ran to the end before its retry arrived freed their keys, so the retry
    # made new tasks of those tags: at least once, never two runs at once (checked above).
    assert set(ledger.accepted.values()) == {f"t{n}" for n in range(plan.tasks)}, "a task never accepted"
    assert ledger.api_kills == len(plan.api_kills)


def processes_started(processes: Processes) -> list[ManagedProcess]:
    return list(processes._started)


@pytest.mark.e2e
@pytest.mark.chaos
def test_chaos_2000_tasks_none_lost_none_run_twice_at_once(
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
    redis_proxy: TcpProxy,
    amqp_proxy: TcpProxy,
) -> None:
    _run_chaos(
        Plan(tasks=2_000, chaos_seconds=15), processes, http, recording, settings, redis_proxy, amqp_proxy
    )


@pytest.mark.e2e
@pytest.mark.soak
def test_soak_20000_tasks_under_chaos(
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
    redis_proxy: TcpProxy,
    amqp_proxy: TcpProxy,
) -> None:
    plan = Plan(
        tasks=20_000,
        chaos_seconds=120,
        schedule_seconds=100,
        amqp_cut=(20.0, 30.0),
        redis_cut=(60.0, 70.0),
        api_kills=(5.0, 15.0, 40.0, 50.0, 80.0, 90.0),
    )
    _run_chaos(plan, processes, http, recording, settings, redis_proxy, amqp_proxy)
