"""The API and the task path on a real Redis Sentinel set (primary + replica + three sentinels):
replicated acceptance (TASKBROKER_REDIS_MIN_REPLICAS), a primary SIGKILLed under load, and
tasks pending across the failover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from redis.asyncio import Redis

from taskbroker.backends import Backends
from taskbroker.errors import StoreUnavailable
from taskbroker.models import TaskState, utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from taskbroker.timeout_daemon.daemon import TimeoutDaemon
from tests.clusters.conftest import backends_over
from tests.clusters.sentinel import SentinelSet
from tests.support.inprocess import Api, api_client, running_consumer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SCHEDULER = "ha"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
NIGHTLY = {"name": "nightly", "scheduler": SCHEDULER, "cron": "0 3 * * *"}


@pytest.fixture
def replicated_settings(sentinel_settings: Settings) -> Settings:
    """One replica must have every accepted write; a short wait, so a stopped replica answers fast."""
    return sentinel_settings.model_copy(update={"redis_min_replicas": 1, "redis_min_replicas_timeout": 300})


@pytest.fixture
async def replicated(replicated_settings: Settings) -> AsyncIterator[Backends]:
    async with backends_over(replicated_settings) as backends:
        yield backends


@pytest.fixture
async def api(replicated_settings: Settings, replicated: Backends) -> AsyncIterator[Api]:
    async with api_client(replicated_settings, replicated) as client:
        yield client


async def _on_replica(cluster: SentinelSet, key: str) -> bool:
    replica = Redis(port=cluster.replica_port, decode_responses=True)
    try:
        return bool(await replica.exists(key))
    finally:
        await replica.aclose()


async def _promoted(cluster: SentinelSet) -> bool:
    return cluster.master_address() == ("127.0.0.1", cluster.replica_port)


def _task_body() -> dict[str, object]:
    return {"scheduler": SCHEDULER, "attributes": ECHO}


async def test_with_min_replicas_a_task_is_answered_201_once_the_replica_has_it(
    api: Api, sentinel_set: SentinelSet, sentinel_settings: Settings
) -> None:
    await api.register(SCHEDULER)

    task = await api.schedule(SCHEDULER, ECHO)

    assert await _on_replica(sentinel_set, f"{sentinel_settings.key_prefix}:task:{task['id']}")


async def test_with_min_replicas_every_accepting_write_is_503_with_retry_after_while_the_replica_is_stopped(
    api: Api, sentinel_set: SentinelSet
) -> None:
    await api.register(SCHEDULER)
    earlier = await api.schedule(SCHEDULER, ECHO)
    sentinel_set.pause("replica")
    try:
        answers = [
            await api.http.post("/task/schedule", json=_task_body(), headers={"Idempotency-Key": "k1"}),
            await api.http.post("/task/schedule/batch", json={"tasks": [_task_body(), _task_body()]}),
            await api.http.post(f"/task/{earlier['id']}/abort"),
            await api.http.post("/scheduler", json={"name": "ha-other", "runtime": "inline"}),
            await api.http.post(
                "/schedules", json={"name": "n", "scheduler": SCHEDULER, "cron": "0 3 * * *"}
            ),
            await api.http.post("/token", json={"role": "client", "name": "ha"}),
        ]
    finally:
        sentinel_set.resume("replica")

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        assert "idempotency key" in answer.json()["detail"]
    # The replica back: the same request, with the same key, is accepted (the task the 503
    # left on the primary, now replicated, or a new one).
    retried = await eventually(
        lambda: _accepted(api, {"Idempotency-Key": "k1"}), what="a 2xx once the replica is back"
    )
    assert retried is not None
    assert retried.status_code in (200, 201), retried.text


async def _accepted(api: Api, headers: dict[str, str]) -> httpx.Response | None:
    answer = await api.http.post("/task/schedule", json=_task_body(), headers=headers)
    return answer if answer.status_code < 300 else None


async def test_the_api_answers_201_or_503_with_retry_after_never_500_while_the_primary_fails_over(
    sentinel_settings: Settings, sentinel_set: SentinelSet, sentinel_backends: Backends
) -> None:
    # MIN_REPLICAS 0: the promoted replica has no replica of its own.
    answers: list[tuple[float, int, str | None]] = []
    killed_at: list[float] = []
    async with api_client(sentinel_settings, sentinel_backends) as api:
        await api.register(SCHEDULER)

        async def load() -> None:
            while True:
                answer = await api.http.post("/task/schedule", json=_task_body())
                answers.append((time.monotonic(), answer.status_code, answer.headers.get("Retry-After")))
                await asyncio.sleep(0.02)

        loader = asyncio.create_task(load())
        try:
            await eventually(lambda: _true(len(answers) >= 5), what="answers before the kill")
            killed_at.append(time.monotonic())
            sentinel_set.kill("primary")
            await eventually(lambda: _promoted(sentinel_set), what="the replica promoted")

            async def accepted_again() -> bool:
                if loader.done():
                    loader.result()
                return any(at > killed_at[0] and status == 201 for at, status, _ in answers)

            await eventually(accepted_again, what="a 201 from the promoted replica")
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)

    statuses = {status for _, status, _ in answers}
    assert statuses <= {201, 503}, answers
    assert all(retry for _, status, retry in answers if status == 503)
    after = [at for at, status, _ in answers if at > killed_at[0] and status == 201]
    print(f"first 201 {after[0] - killed_at[0]:.2f} s after the SIGKILL; statuses {sorted(statuses)}")


async def _true(value: bool) -> bool:
    return value


async def test_tasks_pending_across_a_failover_all_run_those_never_published_too(
    api: Api, sentinel_set: SentinelSet, replicated_settings: Settings, replicated: Backends
) -> None:
    await api.register(SCHEDULER)
    published = [(await api.schedule(SCHEDULER, ECHO))["id"] for _ in range(5)]
    # As an API killed between storing and publishing leaves them: stored (and replicated,
    # create waits for the replica) without a message, past their republish time.
    stored_at = utcnow() - timedelta(seconds=replicated_settings.republish_after + 1)
    unpublished = [NewTask(uuid.uuid4(), SCHEDULER, ECHO, stored_at + timedelta(hours=1)) for _ in range(3)]
    await replicated.store.create(unpublished, now=stored_at)

    sentinel_set.kill("primary")
    await eventually(lambda: _promoted(sentinel_set), what="the replica promoted")
    # The daemon's and the consumer's writes do not wait for replicas (none is left now).
    daemon = TimeoutDaemon(
        settings=replicated_settings,
        store=replicated.store,
        events=replicated.events,
        broker=replicated.broker,
    )

    async def swept() -> int:
        try:
            return (await daemon.sweep()).republished
        except StoreUnavailable:  # Redis still switching: sweep again, as the daemon does
            return 0

    assert await eventually(swept, what="the unpublished tasks republished on the new primary") == 3
    async with running_consumer(replicated_settings, replicated, SCHEDULER):

        async def all_complete() -> bool:
            ids = [*published, *(str(t.id) for t in unpublished)]
            tasks = [await replicated.store.get(uuid.UUID(i)) for i in ids]
            return all(t.state is TaskState.COMPLETE for t in tasks)

        await eventually(all_complete, what="every pending task run after the failover")
