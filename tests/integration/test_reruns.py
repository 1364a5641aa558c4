"""Re-running final tasks by hand, bulk abort and retry, and listing retained final tasks, over
the in-process API on the real Redis and RabbitMQ.

Final states are reached through the store's own transitions (a consumer's claim and finish,
the daemon's expiry, abort), so each test sets up exactly the tasks it needs; one test runs a
real consumer to show that a re-run task runs again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from taskbroker.api.app import create_app
from taskbroker.backends import Backends
from taskbroker.models import TaskState
from taskbroker.settings import Settings
from taskbroker.store import TaskStore
from tests.conftest import ADMIN_TOKEN
from tests.support.inprocess import Api, running_consumer

SCHEDULER = "rerun"
OTHER = "rerun-other"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"v": 1}}
FAIL = {"function": "taskbroker.runtimes.builtin:fail", "kwargs": {"message": "boom"}}


class Caller:
    """One HTTP client per token over the same app."""

    def __init__(self, app: Any, token: str) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {token}"},
        )

    async def schedule(self, scheduler: str = SCHEDULER) -> dict[str, Any]:
        response = await self.http.post("/task/schedule", json={"scheduler": scheduler, "attributes": ECHO})
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task


@pytest.fixture
async def app(settings: Settings, real: Backends) -> Any:
    return create_app(settings, real, owns_backends=False)


@pytest.fixture
async def admin(app: Any, settings: Settings) -> AsyncIterator[Caller]:
    assert settings.admin_token is not None
    caller = Caller(app, settings.admin_token.get_secret_value())
    for name in (SCHEDULER, OTHER):
        response = await caller.http.post("/scheduler", json={"name": name})
        assert response.status_code == 201, response.text
    yield caller
    await caller.http.aclose()


async def _client(app: Any, admin: Caller, name: str) -> Caller:
    response = await admin.http.post("/token", json={"role": "client", "name": name})
    assert response.status_code == 201, response.text
    return Caller(app, response.json()["token"])


async def _fail(real: Backends, task_id: str, error: str = "boom") -> None:
    """What a consumer does with a failing run: claim, then finish failed."""
    claim = await real.store.claim(task_id, consumer="test-consumer", lease=30, max_attempts=3)
    assert claim.task is not None, claim
    kept = await real.store.finish(task_id, consumer="test-consumer", state=TaskState.FAILED, error=error)
    assert kept is None


async def _complete(real: Backends, task_id: str) -> None:
    claim = await real.store.claim(task_id, consumer="test-consumer", lease=30, max_attempts=3)
    assert claim.task is not None, claim
    assert (
        await real.store.finish(task_id, consumer="test-consumer", state=TaskState.COMPLETE, result=1) is None
    )


async def _expire(real: Backends, task_id: str) -> None:
    """The timeout daemon's expiry, as if the task's timeout (the default: 6 hours) had passed."""
    expired = await real.store.expire_due(limit=1000, now=_past_default_timeout())
    assert task_id in {e.id for e in expired}


def _past_default_timeout() -> float:
    return (datetime.now(UTC) + timedelta(hours=7)).timestamp()


async def _final(real: Backends, admin: Caller, state: str) -> dict[str, Any]:
    """A retained task in final ``state``."""
    task = await admin.schedule()
    if state == "failed":
        await _fail(real, task["id"])
    elif state == "timeout":
        await _expire(real, task["id"])
    elif state == "aborted":
        assert (await admin.http.post(f"/task/{task['id']}/abort")).status_code == 200
    elif state == "complete":
        await _complete(real, task["id"])
    got: dict[str, Any] = (await admin.http.get(f"/task/{task['id']}")).json()
    assert got["state"] == state
    return got


async def _ttl(real: Backends, task_id: str) -> int:
    return int(await real.store.redis.pttl(f"{real.store.key_prefix}:task:{task_id}"))


# Re-running one task


@pytest.mark.parametrize("state", ["failed", "timeout", "aborted"])
async def test_a_retained_final_task_retried_by_hand_is_pending_again_and_live(
    real: Backends, admin: Caller, state: str
) -> None:
    task = await _final(real, admin, state)
    assert await _ttl(real, task["id"]) > 0

    response = await admin.http.post(f"/task/{task['id']}/retry")

    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["state"] == "pending"
    assert retried["finished_at"] is None
    assert retried["result"] is None
    assert retried["attempts"] == task["attempts"]
    assert await _ttl(real, task["id"]) == -1, "a live task has no TTL"
    prefix = real.store.key_prefix
    assert await real.store.redis.sismember(f"{prefix}:live:{SCHEDULER}", task["id"])
    assert await real.store.redis.zscore(f"{prefix}:deadlines", task["id"]) is not None
    assert await real.store.redis.zscore(f"{prefix}:unclaimed", task["id"]) is not None
    assert await real.store.redis.zscore(f"{prefix}:final:{SCHEDULER}:{state}", task["id"]) is None
    events = [e async for e in _events(real, task["id"])]
    assert events[-1]["state"] == "retried"


async def _events(real: Backends, task_id: str) -> AsyncIterator[dict[str, Any]]:
    history = await real.events.task_history(UUID(task_id))
    for event in history.events:
        yield event.model_dump(mode="json")


async def test_a_retried_failed_task_runs_again_on_a_consumer_and_its_attempts_count_on(
    settings: Settings, real: Backends, admin: Caller
) -> None:
    api = Api(admin.http)
    response = await admin.http.post("/task/schedule", json={"scheduler": SCHEDULER, "attributes": FAIL})
    task = response.json()
    async with running_consumer(settings, real, SCHEDULER, concurrency=1):
        first = await api.wait_for_state(task["id"])
        assert (first["state"], first["attempts"]) == ("failed", 1)

        assert (await admin.http.post(f"/task/{task['id']}/retry")).status_code == 200

        second = await api.wait_for_state(task["id"])
    assert (second["state"], second["attempts"]) == ("failed", 2)
    assert "boom" in second["error"]


async def test_a_retry_with_a_delay_makes_the_task_delayed_until_not_before(
    real: Backends, admin: Caller
) -> None:
    task = await _final(real, admin, "failed")
    before = datetime.now(UTC)

    response = await admin.http.post(f"/task/{task['id']}/retry", json={"delay": 600})

    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["state"] == "delayed"
    not_before = datetime.fromisoformat(retried["not_before"])
    assert before + timedelta(seconds=600) <= not_before <= datetime.now(UTC) + timedelta(seconds=600)
    prefix = real.store.key_prefix
    assert await real.store.redis.zscore(f"{prefix}:delayed", task["id"]) == pytest.approx(
        not_before.timestamp()
    )
    assert await real.store.redis.zscore(f"{prefix}:unclaimed", task["id"]) is None
    assert await real.store.redis.sismember(f"{prefix}:live:{SCHEDULER}", task["id"])
    last = [e async for e in _events(real, task["id"])][-1]
    assert (last["state"], last["reason"]) == ("delayed", "manual")


async def test_a_retry_with_a_new_timeout_keeps_it(real: Backends, admin: Caller) -> None:
    task = await _final(real, admin, "aborted")
    timeout = datetime.now(UTC) + timedelta(hours=2)

    response = await admin.http.post(f"/task/{task['id']}/retry", json={"timeout": timeout.isoformat()})

    assert datetime.fromisoformat(response.json()["timeout"]) == pytest.approx(
        timeout, abs=timedelta(seconds=1e-3)
    )


@pytest.mark.parametrize(
    "body",
    [
        {"delay": 10, "not_before": "2099-01-01T00:00:00Z"},
        {"delay": -1},
        {"delay": True},
        {"delay": 7200, "timeout": "2099-01-01T00:00:00Z"},
        {"not_before": "2099-01-01T00:00:00Z"},
        {"timeout": "2001-01-01T00:00:00Z"},
        {"unknown": 1},
    ],
)
async def test_a_retry_body_that_cannot_be_honoured_is_a_422_and_changes_nothing(
    real: Backends, admin: Caller, body: dict[str, Any]
) -> None:
    task = await _final(real, admin, "failed")

    response = await admin.http.post(f"/task/{task['id']}/retry", json=body)

    assert response.status_code == 422, response.text
    assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == "failed"


@pytest.mark.parametrize("state", ["pending", "complete"])
async def test_retrying_a_live_or_complete_task_is_a_409(real: Backends, admin: Caller, state: str) -> None:
    task = await _final(real, admin, state) if state != "pending" else await admin.schedule()

    response = await admin.http.post(f"/task/{task['id']}/retry")

    assert response.status_code == 409, response.text
    assert state in response.json()["detail"]
    assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == state


async def test_retrying_an_unknown_task_is_a_404(admin: Caller) -> None:
    response = await admin.http.post("/task/00000000-0000-4000-8000-000000000000/retry")

    assert response.status_code == 404


async def test_a_client_cannot_retry_another_clients_task_and_is_told_404(
    app: Any, real: Backends, admin: Caller
) -> None:
    alice = await _client(app, admin, "alice")
    bob = await _client(app, admin, "bob")
    task = await alice.schedule()
    assert (await alice.http.post(f"/task/{task['id']}/abort")).status_code == 200

    refused = await bob.http.post(f"/task/{task['id']}/retry")
    unknown = await bob.http.post("/task/00000000-0000-4000-8000-000000000000/retry")

    assert refused.status_code == 404
    assert refused.json() == {
        "detail": unknown.json()["detail"].replace("00000000-0000-4000-8000-000000000000", task["id"])
    }
    assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == "aborted"
    assert (await alice.http.post(f"/task/{task['id']}/retry")).json()["state"] == "pending"
    for caller in (alice, bob):
        await caller.http.aclose()


async def test_a_task_retried_past_the_consumer_crash_limit_may_run_again(
    settings: Settings, real: Backends, admin: Caller
) -> None:
    task = await admin.schedule()
    for _ in range(settings.max_attempts):
        claim = await real.store.claim(
            task["id"], consumer="lost", lease=-1, max_attempts=settings.max_attempts
        )
        assert claim.task is not None
    await real.store.abort(UUID(task["id"]), now=datetime.now(UTC))
    assert (await admin.http.post(f"/task/{task['id']}/retry")).status_code == 200

    claim = await real.store.claim(task["id"], consumer="next", lease=30, max_attempts=settings.max_attempts)

    assert claim.task is not None, claim
    assert claim.task.attempts == settings.max_attempts + 1


# Bulk abort and retry


async def test_bulk_abort_takes_the_filter_and_the_limit(real: Backends, admin: Caller) -> None:
    mine = [await admin.schedule() for _ in range(5)]
    other = await admin.schedule(OTHER)

    response = await admin.http.post(
        "/tasks/abort", json={"scheduler": SCHEDULER, "state": "pending", "limit": 3}
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["changed"] == 3
    states = [(await admin.http.get(f"/task/{t['id']}")).json()["state"] for t in mine]
    assert sorted(states) == ["aborted"] * 3 + ["pending"] * 2
    assert {t["id"] for t, s in zip(mine, states, strict=True) if s == "aborted"} == set(answer["ids"])
    assert (await admin.http.get(f"/task/{other['id']}")).json()["state"] == "pending"
    # The batch's final index entries are written together, after the loop: each is there.
    listed = await admin.http.get("/tasks", params={"state": "aborted", "scheduler": SCHEDULER})
    assert {t["id"] for t in listed.json()["tasks"]} == set(answer["ids"])

    rest = await admin.http.post("/tasks/abort", json={"scheduler": SCHEDULER, "state": "running"})
    assert rest.json()["changed"] == 0


async def test_bulk_abort_with_older_than_leaves_younger_tasks(real: Backends, admin: Caller) -> None:
    await admin.schedule()

    response = await admin.http.post("/tasks/abort", json={"older_than": 3600})

    assert response.json() == {"changed": 0, "ids": [], "published": True}


async def test_bulk_changes_by_a_client_touch_only_its_own_tasks(
    app: Any, real: Backends, admin: Caller
) -> None:
    alice = await _client(app, admin, "alice")
    bob = await _client(app, admin, "bob")
    alices = [await alice.schedule() for _ in range(2)]
    bobs = [await bob.schedule() for _ in range(2)]

    aborted = await bob.http.post("/tasks/abort", json={})
    assert aborted.json()["changed"] == 2
    assert set(aborted.json()["ids"]) == {t["id"] for t in bobs}
    for task in alices:
        assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == "pending"

    assert (await alice.http.post("/tasks/abort", json={})).json()["changed"] == 2
    retried = await bob.http.post("/tasks/retry", json={"state": "aborted"})
    assert set(retried.json()["ids"]) == {t["id"] for t in bobs}
    for task in alices:
        assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == "aborted"
    assert (await admin.http.post("/tasks/retry", json={})).json()["changed"] == 2
    for caller in (alice, bob):
        await caller.http.aclose()


async def test_bulk_retry_takes_the_state_filter_and_the_limit_and_publishes(
    settings: Settings, real: Backends, admin: Caller
) -> None:
    failed = [await _final(real, admin, "failed") for _ in range(3)]
    timed_out = await _final(real, admin, "timeout")

    response = await admin.http.post(
        "/tasks/retry", json={"scheduler": SCHEDULER, "state": "failed", "limit": 2}
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["changed"], answer["published"]) == (2, True)
    assert set(answer["ids"]) == {t["id"] for t in failed[1:]}, "newest first"
    assert (await admin.http.get(f"/task/{failed[0]['id']}")).json()["state"] == "failed"
    assert (await admin.http.get(f"/task/{timed_out['id']}")).json()["state"] == "timeout"
    api = Api(admin.http)
    async with running_consumer(settings, real, SCHEDULER):
        for task_id in answer["ids"]:
            assert (await api.wait_for_state(task_id))["state"] == "complete"


async def test_bulk_retry_with_older_than_leaves_recent_failures(real: Backends, admin: Caller) -> None:
    await _final(real, admin, "failed")

    response = await admin.http.post("/tasks/retry", json={"older_than": 3600})

    assert response.json()["changed"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": 10_001},
        {"limit": "5"},
        {"state": "complete"},
        {"older_than": -1},
        {"older_than": False},
        {"older_than": "60"},
        {"scheduler": "no such!"},
        {"unknown": 1},
    ],
)
async def test_a_bulk_filter_out_of_range_is_a_422(admin: Caller, body: dict[str, Any]) -> None:
    for path in ("/tasks/abort", "/tasks/retry"):
        response = await admin.http.post(path, json=body)
        assert response.status_code == 422, (path, response.text)


# Listing final tasks


async def test_final_tasks_are_listed_newest_first_page_by_page(real: Backends, admin: Caller) -> None:
    failed = [await _final(real, admin, "failed") for _ in range(5)]
    await _final(real, admin, "aborted")

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"state": "failed", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await admin.http.get("/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        assert all(t["state"] == "failed" for t in page["tasks"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in reversed(failed)]
    assert pages == 3


async def test_tasks_finished_in_the_same_millisecond_are_each_listed_once(
    real: Backends, admin: Caller
) -> None:
    tasks = [await admin.schedule(s) for s in (SCHEDULER, SCHEDULER, OTHER, SCHEDULER, OTHER)]
    assert (
        len(await real.store.expire_due(limit=1000, now=_past_default_timeout())) == 5
    )  # one sweep: one finish time

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"state": "timeout", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await admin.http.get("/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(t["id"] for t in tasks)


async def test_a_client_lists_only_its_own_final_tasks(app: Any, real: Backends, admin: Caller) -> None:
    alice = await _client(app, admin, "alice")
    mine = await alice.schedule()
    await alice.http.post(f"/task/{mine['id']}/abort")
    theirs = await _final(real, admin, "aborted")

    listed = {t["id"] for t in (await alice.http.get("/tasks", params={"state": "aborted"})).json()["tasks"]}
    everything = {
        t["id"] for t in (await admin.http.get("/tasks", params={"state": "aborted"})).json()["tasks"]
    }

    assert listed == {mine["id"]}
    assert everything == {mine["id"], theirs["id"]}
    await alice.http.aclose()


async def test_a_final_task_whose_hash_expired_is_dropped_from_the_listing(
    real: Backends, admin: Caller
) -> None:
    gone = await _final(real, admin, "failed")
    kept = await _final(real, admin, "failed")
    prefix = real.store.key_prefix
    await real.store.redis.delete(f"{prefix}:task:{gone['id']}")

    page = (await admin.http.get("/tasks", params={"state": "failed", "scheduler": SCHEDULER})).json()

    assert [t["id"] for t in page["tasks"]] == [kept["id"]]
    assert await real.store.redis.zscore(f"{prefix}:final:{SCHEDULER}:failed", gone["id"]) is None


# Retention


async def test_failed_and_timed_out_tasks_are_kept_for_the_failed_retention_the_others_for_retention(
    settings: Settings, real: Backends, admin: Caller
) -> None:
    ttls = {
        state: await _ttl(real, (await _final(real, admin, state))["id"])
        for state in ("failed", "timeout", "complete", "aborted")
    }
    retention = settings.retention.total_seconds() * 1000
    failed_retention = settings.failed_retention.total_seconds() * 1000
    assert failed_retention > retention

    for state in ("failed", "timeout"):
        assert retention < ttls[state] <= failed_retention, state
    for state in ("complete", "aborted"):
        assert 0 < ttls[state] <= retention, state


async def test_a_task_whose_scheduler_was_deleted_is_not_retried_and_no_longer_listed(
    real: Backends, admin: Caller
) -> None:
    task = await admin.schedule(OTHER)
    assert (await admin.http.delete(f"/scheduler/{OTHER}", params={"force": "true"})).status_code == 204

    response = await admin.http.post(f"/task/{task['id']}/retry")

    assert response.status_code == 409
    assert "deleted" in response.json()["detail"]
    assert (await admin.http.get(f"/task/{task['id']}")).json()["state"] == "aborted"
    listed = (await admin.http.get("/tasks", params={"state": "aborted", "scheduler": OTHER})).json()
    assert listed["tasks"] == []
    assert await real.store.redis.exists(f"{real.store.key_prefix}:final:{OTHER}:aborted") == 0


async def test_the_final_index_is_trimmed_to_the_retention_as_tasks_finish(
    settings: Settings, real: Backends, admin: Caller
) -> None:
    store = TaskStore(
        real.store.redis, real.store.key_prefix, settings.retention, failed_retention=timedelta(seconds=60)
    )
    first = await admin.schedule()
    soon = _past_default_timeout()
    assert len(await store.expire_due(limit=10, now=soon)) == 1
    index = f"{real.store.key_prefix}:final:{SCHEDULER}:timeout"
    assert await real.store.redis.zscore(index, first["id"]) is not None

    second = await admin.schedule()
    assert len(await store.expire_due(limit=10, now=soon + 61)) == 1

    assert await real.store.redis.zscore(index, first["id"]) is None
    assert await real.store.redis.zscore(index, second["id"]) is not None


async def test_retry_and_final_listing_work_on_the_embedded_backends_too(api: Api) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, ECHO)
    assert (await api.http.post(f"/task/{task['id']}/abort")).status_code == 200
    listed = (await api.http.get("/tasks", params={"state": "aborted"})).json()["tasks"]
    assert [t["id"] for t in listed] == [task["id"]]

    retried = await api.http.post(f"/task/{task['id']}/retry", json={"delay": 60})

    assert retried.json()["state"] == "delayed"
    assert (await api.http.get("/tasks", params={"state": "aborted"})).json()["tasks"] == []
    bulk = await api.http.post("/tasks/abort", json={"state": "delayed"})
    assert bulk.json()["ids"] == [task["id"]]


async def test_re_running_counts_against_the_scheduling_rate_limit(
    settings: Settings, real: Backends
) -> None:
    limited = settings.model_copy(update={"schedule_rate_limit": 4})
    app = create_app(limited, real, owns_backends=False)
    admin = Caller(app, ADMIN_TOKEN)
    assert (await admin.http.post("/scheduler", json={"name": SCHEDULER})).status_code == 201
    client = await _client(app, admin, "limited")
    tasks = [await client.schedule() for _ in range(3)]  # 3 of 4
    assert (await client.http.post("/tasks/abort", json={})).json()["changed"] == 3

    assert (await client.http.post("/tasks/retry", json={})).json()["changed"] == 3  # 4 of 4, then 6
    refused = await client.http.post(f"/task/{tasks[0]['id']}/retry")
    refused_bulk = await client.http.post("/tasks/retry", json={})

    assert refused.status_code == 429
    assert refused_bulk.status_code == 429
    for caller in (admin, client):
        await caller.http.aclose()
