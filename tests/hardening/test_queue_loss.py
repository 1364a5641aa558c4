"""The queue deleted under a live consumer, out of band (as `rabbitmqctl delete_queue` or a lost
classic queue's node would), while tasks run and others wait in it: the running tasks finish, the
consumer resubscribes once the scheduler is registered again, and the messages lost with the
queue are republished by reconciliation, so every accepted task still completes, once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from taskbroker.names import queue_name
from taskbroker.queue.amqp import AmqpBroker
from tests.conftest import AMQP_URL
from tests.hardening.conftest import SCHEDULER, WORKER_CONCURRENCY, Deployment
from tests.support.blocking_api import BlockingApi
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e


def _delete_queue(name: str) -> None:
    async def delete() -> None:
        broker = AmqpBroker(AMQP_URL, connection_name="taskbroker-test-operator")
        try:
            await broker.delete(name)
        finally:
            await broker.close()

    asyncio.run(delete())


def test_a_queue_deleted_under_a_live_consumer_loses_no_accepted_task(deployment: Deployment) -> None:
    recording = deployment.recording
    with httpx.Client(headers=deployment.admin_headers, timeout=30) as http:
        # The fuzz pass's admin run may have deleted it; the consumer resubscribes when it is back.
        assert http.post(f"{deployment.url}/scheduler", json={"name": SCHEDULER}).status_code in (200, 201)
        api = BlockingApi(http, deployment.url)
        running = [f"q-run-{n}" for n in range(WORKER_CONCURRENCY)]
        waiting = [f"q-wait-{n}" for n in range(6)]
        tasks = api.schedule_batch(
            SCHEDULER, [recording.call(tag, asynchronous=True, held=True) for tag in running]
        )
        eventually_sync(
            lambda: all(recording.starts(tag) == 1 for tag in running),
            what="the held tasks to run",
            deadline=60,
        )
        tasks += api.schedule_batch(SCHEDULER, [recording.call(tag, asynchronous=True) for tag in waiting])
        assert api.scheduler(SCHEDULER)["messages"] >= len(waiting) - WORKER_CONCURRENCY

        _delete_queue(queue_name(deployment.settings.key_prefix, SCHEDULER))
        deployment.worker.wait_for_event("consumer.subscription_lost")
        again = http.post(f"{deployment.url}/scheduler", json={"name": SCHEDULER})
        assert again.status_code in (200, 201), again.text
        for tag in running:
            recording.release(tag)

        for task in tasks:
            api.wait_for_state(task["id"], "complete")
    assert all(recording.starts(tag) == 1 for tag in running), "a running task was run again"
    assert all(recording.ends(tag) >= 1 for tag in waiting)
    republished = {e["task_id"] for e in deployment.daemon.events("task.republished")}
    assert republished >= {t["id"] for t in tasks[WORKER_CONCURRENCY:]}, "lost messages not reconciled"
