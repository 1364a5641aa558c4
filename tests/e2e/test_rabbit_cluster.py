"""taskbroker on a real 3-node RabbitMQ cluster (tests/clusters/rabbitmq.py), with nodes killed:
a classic queue whose node is down is unavailable (retry), not missing (register); confirmed
messages of a quorum queue all survive the loss of its leader; a publish whose node dies before
its confirm is published again through another node, so every 201 task runs and no request is a
500. One cluster serves the module; a test that kills a node starts it again before it ends."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.errors import BrokerUnavailable, QueueMissing, QueueUnavailable
from taskbroker.models import QueueType, utcnow
from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.queue.base import Delivery, QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.clusters.rabbitmq import Node, RabbitCluster, cluster_for_a_module
from tests.conftest import cleanup
from tests.support.inprocess import api_client
from tests.support.processes import Processes
from tests.support.recorder import Recording
from tests.support.waiting import eventually, eventually_sync

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    yield from cluster_for_a_module()


@pytest.fixture
def queue(settings: Settings) -> str:
    return queue_name(settings.key_prefix, f"ha-{uuid.uuid4().hex[:6]}")


@pytest.fixture
async def brokers(cluster: RabbitCluster) -> AsyncIterator[list[AmqpBroker]]:
    """Brokers the test builds (closed at the end); the test's queues are deleted through the
    last of them that is still connected."""
    built: list[AmqpBroker] = []
    yield built
    for broker in built:
        await broker.close()


def _broker(brokers: list[AmqpBroker], urls: str | list[str], name: str = "taskbroker-test-ha") -> AmqpBroker:
    broker = AmqpBroker(urls, connection_name=name, connect_timeout=5, delivery_limit=20)
    brokers.append(broker)
    return broker


@pytest.fixture
def restart_killed(cluster: RabbitCluster) -> Iterator[None]:
    yield
    for node in cluster.nodes:
        cluster.restart(node)


async def _consume(broker: AmqpBroker, queue: str, expected: int, *, what: str) -> set[bytes]:
    bodies: set[bytes] = set()

    def on_delivery(delivery: Delivery) -> None:
        bodies.add(delivery.body)
        delivery.ack()

    subscription = await broker.subscribe(queue, prefetch=200, on_delivery=on_delivery)
    try:
        await eventually(lambda: _now(len(bodies) >= expected), what=what, deadline=120)
    finally:
        await subscription.cancel()
    return bodies


async def _now(value: bool) -> bool:
    return value


async def test_a_classic_queue_whose_node_is_down_is_unavailable_not_missing(
    cluster: RabbitCluster, brokers: list[AmqpBroker], queue: str, restart_killed: None
) -> None:
    home = cluster.nodes[2]
    others = [n.url for n in cluster.nodes if n is not home]
    await _broker(brokers, home.url).declare(queue)  # a classic queue lives where it was declared
    assert cluster.home_node(queue) == home
    elsewhere = _broker(brokers, others)

    cluster.kill(home)

    with pytest.raises(QueueUnavailable, match="node is down"):
        await elsewhere.stats(queue)
    with pytest.raises(QueueUnavailable, match="node is down"):
        await elsewhere.publish(queue, [b"while-down"])
    with pytest.raises(QueueUnavailable, match="node is down"):
        await elsewhere.subscribe(queue, prefetch=1, on_delivery=lambda d: None)
    with pytest.raises(QueueMissing, match="register the scheduler"):
        await elsewhere.publish(f"{queue}-never-declared", [b"nowhere"])

    cluster.restart(home)
    await elsewhere.publish(queue, [b"after"])
    assert await _consume(elsewhere, queue, 1, what="the message published after the restart") == {b"after"}
    await elsewhere.delete(queue)


async def _lapsed_running_task(backends: Backends, scheduler: str) -> str:
    """A task running under a lease that has lapsed: its consumer died."""
    now = utcnow()
    task = NewTask(uuid.uuid4(), scheduler, {}, now + timedelta(hours=1))
    await backends.store.create([task], now=now)
    claim = await backends.store.claim(str(task.id), consumer="dead", lease=0.05, max_attempts=3)
    assert claim.task is not None

    async def lapsed() -> bool:
        return str(task.id) in {r.id for r in await backends.store.lapsed(limit=100)}

    await eventually(lapsed, what="the lease to lapse")
    return str(task.id)


async def test_a_classic_schedulers_lost_node_is_503_for_it_and_holds_up_no_other_scheduler(
    cluster: RabbitCluster, settings: Settings, restart_killed: None
) -> None:
    """The API says the node is down (not "register"); the timeout daemon still requeues the
    quorum scheduler's lapsed task while the classic one's waits for its node."""
    home = cluster.nodes[2]
    declaring = settings.model_copy(update={"amqp_url": home.url})
    backends = real_backends(declaring, connection_name="taskbroker-test-ha-api")
    async with api_client(declaring, backends) as api:
        assert (await api.http.post("/scheduler", json={"name": "classic"})).status_code == 201
        replicated = {"name": "replicated", "queue_type": "quorum"}
        assert (await api.http.post("/scheduler", json=replicated)).status_code == 201
    stuck = await _lapsed_running_task(backends, "classic")
    moving = await _lapsed_running_task(backends, "replicated")
    await backends.close()
    cluster.kill(home)
    survivors = settings.model_copy(update={"amqp_url": ",".join(n.url for n in cluster.nodes[:2])})
    backends = real_backends(survivors, connection_name="taskbroker-test-ha-api")
    try:
        async with api_client(survivors, backends) as api:
            response = await api.http.post("/task/schedule", json={"scheduler": "classic", "attributes": {}})
            listed = (await api.http.get("/tasks?scheduler=classic&state=pending")).json()
        report = await TimeoutDaemon(
            settings=survivors, store=backends.store, events=backends.events, broker=backends.broker
        ).sweep()

        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert "node is down" in response.json()["detail"]
        assert "register" not in response.json()["detail"]
        assert listed["tasks"] == []  # nothing was kept of the refused task
        assert report.requeued == 1
        assert (await backends.store.get(uuid.UUID(moving))).state == "pending"
        assert (await backends.store.get(uuid.UUID(stuck))).state == "running"  # its lease still lapsed
    finally:
        cluster.restart(home)
        for name in ("classic", "replicated"):
            await _delete_eventually(backends.broker, queue_name(settings.key_prefix, name))
        await backends.close()
        await cleanup(settings)


async def test_every_confirmed_message_of_a_quorum_queue_survives_its_leader_killed_and_restarted(
    cluster: RabbitCluster, brokers: list[AmqpBroker], queue: str, restart_killed: None
) -> None:
    broker = _broker(brokers, cluster.urls)
    await broker.declare(queue, QueueType.QUORUM)
    before = [f"before-{i}".encode() for i in range(300)]
    await broker.publish(queue, before)
    leader = cluster.quorum_leader(queue)

    cluster.kill(leader)
    after = [f"after-{i}".encode() for i in range(300)]
    for start in range(0, len(after), 50):  # in several publishes, through the failover
        await broker.publish(queue, after[start : start + 50])
    survivors = _broker(brokers, [n.url for n in cluster.nodes if n is not leader])
    first_half = await _consume(survivors, queue, len(before) + len(after), what="every confirmed message")
    assert first_half >= set(before) | set(after)

    cluster.restart(leader)
    await broker.publish(queue, [b"after-restart"])
    back = _broker(brokers, leader.url)
    assert await _consume(back, queue, 1, what="a message through the restarted node") == {b"after-restart"}
    assert (await back.stats(queue)).messages == 0
    await _delete_eventually(back, queue)


def test_killing_the_node_the_api_publishes_through_loses_no_201_task_and_answers_no_500(
    cluster: RabbitCluster,
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
    restart_killed: None,
) -> None:
    env = {"TASKBROKER_AMQP_URL": cluster.amqp_url}
    api_process, url = processes.api(env=env)
    response = http.post(f"{url}/scheduler", json={"name": "ha", "queue_type": "quorum"})
    assert response.status_code == 201, response.text
    connected = eventually_sync(
        lambda: _connected_node(cluster, api_process.pid), what="the API's RabbitMQ connection"
    )
    assert connected is not None
    node = connected
    accepted: list[str] = []
    statuses: list[int] = []
    longest = [0.0]
    lock = threading.Lock()
    stop = threading.Event()

    def schedule(worker: int) -> None:
        with httpx.Client(timeout=60, headers=dict(http.headers)) as client:
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                reply = client.post(
                    f"{url}/task/schedule",
                    json={"scheduler": "ha", "attributes": recording.call(f"{worker}-{n}")},
                )
                with lock:
                    longest[0] = max(longest[0], time.monotonic() - sent)
                    statuses.append(reply.status_code)
                    if reply.status_code == 201:
                        accepted.append(reply.json()["id"])

    threads = [threading.Thread(target=schedule, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        eventually_sync(lambda: len(accepted) >= 40, what="tasks accepted before the kill")
        cluster.kill(node)
        killed_at = len(accepted)
        eventually_sync(lambda: len(accepted) >= killed_at + 80, what="tasks accepted after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    retried = api_process.events("queue.publish_retry")
    print(
        f"answers {Counter(statuses)}, publishes retried on another node or channel: {len(retried)}, "
        f"longest request {longest[0]:.2f} s"
    )
    assert set(statuses) <= {201, 503}, statuses
    assert api_process.returncode is None

    processes.worker("worker", "ha", concurrency=8, env=env)

    def unfinished() -> list[str]:
        states = {i: http.get(f"{url}/task/{i}").json()["state"] for i in accepted}
        return [i for i, state in states.items() if state != "complete"]

    eventually_sync(
        lambda: not unfinished(), what="every accepted task to complete", deadline=180, interval=1
    )
    cluster.restart(node)
    asyncio.run(_delete_queue(cluster, queue_name(settings.key_prefix, "ha")))


def test_a_worker_whose_node_dies_consumes_again_through_another_node(
    cluster: RabbitCluster,
    processes: Processes,
    http: httpx.Client,
    recording: Recording,
    settings: Settings,
    restart_killed: None,
) -> None:
    env = {"TASKBROKER_AMQP_URL": cluster.amqp_url}
    _, url = processes.api(env=env)
    assert http.post(f"{url}/scheduler", json={"name": "moving", "queue_type": "quorum"}).status_code == 201
    worker = processes.worker("worker", "moving", concurrency=2, env=env)
    first = eventually_sync(lambda: _connected_node(cluster, worker.pid), what="the worker's connection")
    assert first is not None

    cluster.kill(first)
    eventually_sync(
        lambda: len(worker.events("consumer.subscribed")) >= 2, what="the worker to subscribe again"
    )
    task = http.post(f"{url}/task/schedule", json={"scheduler": "moving", "attributes": recording.call("m")})
    assert task.status_code == 201, task.text

    eventually_sync(
        lambda: http.get(f"{url}/task/{task.json()['id']}").json()["state"] == "complete",
        what="the task to run on the worker's new node",
    )
    assert _connected_node(cluster, worker.pid) not in (None, first)
    lost = worker.events("consumer.subscription_lost")
    assert [e["reason"] for e in lost] == ["connection_lost"]
    cluster.restart(first)
    asyncio.run(_delete_queue(cluster, queue_name(settings.key_prefix, "moving")))


async def _delete_queue(cluster: RabbitCluster, queue: str) -> None:
    broker = AmqpBroker(cluster.urls, connection_name="taskbroker-test-ha-cleanup")
    try:
        await _delete_eventually(broker, queue)
    finally:
        await broker.close()


async def _delete_eventually(broker: QueueBroker, queue: str) -> None:
    """Delete a queue, retrying: just after a member restarts, a quorum queue's delete can take
    longer than one operation's timeout (measured here: one run in four)."""

    async def deleted() -> bool:
        try:
            await broker.delete(queue)
        except BrokerUnavailable:
            return False
        return True

    await eventually(deleted, what=f"queue {queue} deleted", deadline=60, interval=1)


def _connected_node(cluster: RabbitCluster, pid: int) -> Node | None:
    try:
        return cluster.node_of_connection(pid)
    except RuntimeError:
        return None


def test_the_launcher_stops_exactly_its_nodes(cluster: RabbitCluster) -> None:
    """The state file names the three PIDs the launcher started, and each is a RabbitMQ VM."""
    state = json.loads((cluster.base / "state.json").read_text())
    pids = [n["pid"] for n in state["nodes"]]

    assert len(set(pids)) == 3
    for pid in pids:
        assert b"rabbit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert sorted(cluster.running_nodes()) == [n.name for n in cluster.nodes]
