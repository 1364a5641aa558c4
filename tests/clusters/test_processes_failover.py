"""Real `taskbroker` processes (API, worker, timeout daemon) on a Redis Sentinel set with
TASKBROKER_REDIS_MIN_REPLICAS=1: the primary SIGKILLed, the processes follow the promotion by
themselves; once the old primary is back as a replica, accepting resumes, and every task answered
201, before or after, ends complete. No answer is a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from taskbroker.settings import Settings
from tests.clusters.sentinel import SentinelSet
from tests.conftest import ADMIN_HEADERS, AMQP_URL
from tests.support.processes import Processes, process_env
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(180)]

SCHEDULER = "ha-processes"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}


@pytest.fixture
def processes(settings: Settings, sentinel_set: SentinelSet, tmp_path: Path) -> Iterator[Processes]:
    env = process_env(
        key_prefix=settings.key_prefix,
        redis_url="redis://127.0.0.1:1/0",  # unused with Sentinels: a closed port proves it
        amqp_url=AMQP_URL,
        extra={
            "TASKBROKER_REDIS_SENTINELS": sentinel_set.sentinels_setting,
            "TASKBROKER_REDIS_MASTER": sentinel_set.master_name,
            "TASKBROKER_REDIS_MIN_REPLICAS": "1",
        },
    )
    started = Processes(tmp_path, env)
    try:
        yield started
    finally:
        started.kill_all()
        asyncio.run(_delete_queue(settings))


async def _delete_queue(settings: Settings) -> None:
    broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-cleanup")
    try:
        await broker.delete(queue_name(settings.key_prefix, SCHEDULER))
    finally:
        await broker.close()


def test_processes_follow_a_failover_and_every_accepted_task_completes(
    processes: Processes, sentinel_set: SentinelSet
) -> None:
    _api, url = processes.api()
    answers: list[int] = []
    with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as http:
        assert http.post("/scheduler", json={"name": SCHEDULER, "runtime": "inline"}).status_code == 201
        processes.worker("worker", SCHEDULER)
        processes.timeout_daemon()

        def schedule() -> dict[str, Any] | None:
            answer = http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": ECHO})
            answers.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.headers["Retry-After"]
            task: dict[str, Any] | None = answer.json() if answer.status_code == 201 else None
            return task

        before = [schedule() for _ in range(5)]
        assert all(before), answers

        sentinel_set.kill("primary")
        eventually_sync(
            lambda: sentinel_set.master_address() == ("127.0.0.1", sentinel_set.replica_port),
            what="the replica promoted",
        )
        sentinel_set.rejoin("primary")  # a replica again: MIN_REPLICAS=1 can be met
        first_after = eventually_sync(schedule, what="a 201 after the failover", interval=0.2)
        after = [first_after, *(eventually_sync(schedule, what="a 201") for _ in range(4))]

        accepted = [task["id"] for task in (*before, *after) if task]

        def all_complete() -> bool:
            states = [http.get(f"/task/{task_id}").json().get("state") for task_id in accepted]
            return all(state == "complete" for state in states)

        eventually_sync(all_complete, what="every accepted task complete", interval=0.2)
    assert set(answers) <= {201, 503}, answers
