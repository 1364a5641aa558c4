"""The failover chaos test on real clusters (issue 18): tasks keep being accepted and run while the
quorum queue's leader node is SIGKILLed (and later restarted) and the Redis primary is SIGKILLed
(and later brought back as a replica), with `TASKBROKER_REDIS_MIN_REPLICAS=1`.

Real processes: one API, two consumers of one quorum-queue scheduler, two timeout daemons, all
pointed at a 3-node RabbitMQ cluster (every node in `TASKBROKER_AMQP_URL`) and at a Redis primary,
replica and three Sentinels. The client schedules in batches with idempotency keys and retries
what is answered 503 or not answered, as a careful client does. At the end every task answered
201 is final, none is lost, no two runs of one task overlapped, and the test prints the longest
pause the API showed (503s with Retry-After are fine; a hang fails the test).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pika
import pytest
import redis

from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.clusters.rabbitmq import RabbitCluster, cluster_available, cluster_for_a_module
from tests.clusters.sentinel import SentinelSet
from tests.support.blocking_api import FINAL_STATES
from tests.support.processes import Processes
from tests.support.recorder import Recording, overlapping_runs
from tests.support.waiting import eventually_sync

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.chaos,
    pytest.mark.skipif(not cluster_available(), reason="RabbitMQ's server scripts are not installed"),
]

SCHEDULER = "failover"
TASKS = 2000
BATCH = 50
SCHEDULE_SECONDS = 16.0
"""The client offers its batches over this window, so some meet each failover."""
QUORUM_LEADER_KILL, REDIS_PRIMARY_KILL, QUORUM_LEADER_RESTART = 3.0, 7.0, 12.0
"""Seconds into the run."""
HUNG = 30.0
"""A request not answered in this long is a hang (the client's timeout): the test fails."""
SENTINEL_LAYOUT = {"primary_port": 6431, "replica_port": 6432, "sentinel_ports": (26431, 26432, 26433)}
"""Ports of its own, apart from the Sentinel tests' set."""


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    yield from cluster_for_a_module()


@dataclass
class Ledger:
    accepted: dict[str, str] = field(default_factory=dict)  # task id -> tag
    answers: Counter[int] = field(default_factory=Counter)  # status code -> count
    unanswered: int = 0
    accepted_at: list[float] = field(default_factory=list)
    longest_request: float = 0.0


def _schedule_all(http: httpx.Client, url: str, recording: Recording, ledger: Ledger) -> None:
    began = time.monotonic()
    batches = -(-TASKS // BATCH)
    for number, start in enumerate(range(0, TASKS, BATCH)):
        time.sleep(max(0.0, began + number * SCHEDULE_SECONDS / batches - time.monotonic()))
        tags = [f"t{n}" for n in range(start, min(start + BATCH, TASKS))]
        body = {
            "tasks": [
                {
                    "scheduler": SCHEDULER,
                    "attributes": recording.call(tag, asynchronous=True, seconds=0.05),
                    "key": tag,
                }
                for tag in tags
            ]
        }
        while True:
            sent = time.monotonic()
            try:
                response = http.post(f"{url}/task/schedule/batch", json=body, timeout=HUNG)
            except httpx.TimeoutException:
                raise AssertionError(f"the API hung: no answer in {HUNG} s") from None
            except httpx.TransportError:
                ledger.unanswered += 1
                time.sleep(0.2)  # a client's backoff before retrying
                continue
            finally:
                ledger.longest_request = max(ledger.longest_request, time.monotonic() - sent)
            ledger.answers[response.status_code] += 1
            if response.status_code in (200, 201):
                for task, tag in zip(response.json()["tasks"], tags, strict=True):
                    ledger.accepted[task["id"]] = tag
                ledger.accepted_at.append(time.monotonic())
                break
            assert response.status_code in (409, 503), response.text
            if response.status_code == 503:
                assert "retry-after" in response.headers, response.headers
            time.sleep(0.2)  # a client's backoff before retrying the same keys


def _longest_pause(ledger: Ledger) -> float:
    """The longest time between two accepted batches (or since the start)."""
    times = sorted(ledger.accepted_at)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _states(sentinels: SentinelSet, key_prefix: str, ids: list[str]) -> dict[str, tuple[str, str]]:
    address = sentinels.master_address()
    assert address is not None, "no sentinel names a primary"
    primary = redis.Redis(host=address[0], port=address[1], decode_responses=True, socket_timeout=2)
    try:
        pipe = primary.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(f"{key_prefix}:task:{task_id}", "state", "attempts")
        found = pipe.execute()
    finally:
        primary.close()
    return {task_id: (s, a) for task_id, (s, a) in zip(ids, found, strict=True) if s is not None}


def _promoted(sentinels: SentinelSet) -> bool:
    address = sentinels.master_address()
    return address is not None and address[1] != sentinels.primary_port


def test_failover_of_the_quorum_leader_and_the_redis_primary_loses_no_accepted_task(
    rabbit_cluster: RabbitCluster,
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
) -> None:
    with SentinelSet.running(**SENTINEL_LAYOUT) as sentinels:
        processes.env.update(
            TASKBROKER_REDIS_URL="redis://127.0.0.1:1/0",  # unused with Sentinels: a closed port
            TASKBROKER_REDIS_SENTINELS=sentinels.sentinels_setting,
            TASKBROKER_REDIS_MASTER=sentinels.master_name,
            TASKBROKER_REDIS_MIN_REPLICAS="1",
            TASKBROKER_AMQP_URL=rabbit_cluster.amqp_url,
            TASKBROKER_QUEUE_TYPE="quorum",
            TASKBROKER_LEASE="2",
            TASKBROKER_REPUBLISH_AFTER="3",
        )
        _, url = processes.api()
        registered = http.post(f"{url}/scheduler", json={"name": SCHEDULER, "queue_type": "quorum"})
        assert registered.status_code == 201, registered.text
        queue = queue_name(settings.key_prefix, SCHEDULER)
        daemons = [processes.timeout_daemon("daemon-a"), processes.timeout_daemon("daemon-b")]
        workers = [processes.worker(f"worker-{n}", SCHEDULER, concurrency=8) for n in (1, 2)]
        leader = rabbit_cluster.quorum_leader(queue)

        ledger = Ledger()
        client = threading.Thread(target=_schedule_all, args=(http, url, recording, ledger), daemon=True)
        client.start()
        began = time.monotonic()
        steps = ["leader", "primary", "restart"]
        while steps:
            elapsed = time.monotonic() - began
            if steps[0] == "leader" and elapsed >= QUORUM_LEADER_KILL:
                rabbit_cluster.kill(leader)
                steps.pop(0)
            elif steps[0] == "primary" and elapsed >= REDIS_PRIMARY_KILL:
                sentinels.kill("primary")
                # Promotion, then the old primary back as a replica: with MIN_REPLICAS=1 the API
                # accepts again only once the new primary has a replica (docs/operations.md).
                eventually_sync(lambda: _promoted(sentinels), what="a replica to be promoted", deadline=30)
                sentinels.rejoin("primary")
                steps.pop(0)
            elif steps[0] == "restart" and elapsed >= QUORUM_LEADER_RESTART:
                rabbit_cluster.restart(leader)
                steps.pop(0)
            time.sleep(0.05)  # the chaos schedule's clock tick, not a wait for an event
        client.join(timeout=300)
        assert not client.is_alive(), "the scheduling client never finished"

        ids = list(ledger.accepted)

        def all_final() -> bool:
            states = _states(sentinels, settings.key_prefix, ids)
            return len(states) == len(ids) and all(s in FINAL_STATES for s, _ in states.values())

        eventually_sync(all_final, what="every accepted task to be final", deadline=300, interval=0.5)
        final = _states(sentinels, settings.key_prefix, ids)
        events = recording.events()
        runs = Counter(e.tag for e in events if e.event == "start")
        print(
            f"\nfailover chaos: {len(ids)} tasks accepted; answers {dict(ledger.answers)}, "
            f"{ledger.unanswered} requests unanswered and retried; longest pause between accepted "
            f"batches {_longest_pause(ledger):.2f} s, longest request {ledger.longest_request:.2f} s; "
            f"final states {dict(Counter(s for s, _ in final.values()))}; {sum(runs.values())} runs, "
            f"{sum(1 for n in runs.values() if n > 1)} tasks ran more than once; quorum leader was "
            f"{leader.name}"
        )
        assert set(ledger.accepted.values()) == {f"t{n}" for n in range(TASKS)}, "a task never accepted"
        assert len(final) == len(ids), "accepted tasks missing from Redis: lost"
        assert {s for s, _ in final.values()} == {"complete"}
        assert overlapping_runs(events, {}) == []
        assert all(p.returncode is None for p in [*daemons, *workers]), "a process died"
        _delete_queue(rabbit_cluster, queue)


def _delete_queue(cluster: RabbitCluster, queue: str) -> None:
    """The cluster may be CI's, shared by the session: leave nothing of ours on it."""
    connection = pika.BlockingConnection([pika.URLParameters(u) for u in cluster.urls])
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()
