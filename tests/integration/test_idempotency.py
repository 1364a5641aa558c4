"""Idempotent scheduling: while a task holding an idempotency key is live, the same request
answers that task (200) instead of creating another; once it is final, the key is free again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

import taskbroker.idempotency
from taskbroker.backends import Backends
from taskbroker.errors import IdempotencyKeyPending
from taskbroker.models import utcnow
from taskbroker.settings import Settings
from taskbroker.store import NewTask
from tests.support.inprocess import Api, running_consumer

SCHEDULER = "idem"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}


def _body(key: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"scheduler": SCHEDULER, "attributes": ECHO, **extra}
    if key is not None:
        body["key"] = key
    return body


async def _post(api: Api, body: dict[str, Any], header_key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": header_key} if header_key is not None else {}
    return await api.http.post("/task/schedule", json=body, headers=headers)


async def _live_tasks(api: Api) -> list[dict[str, Any]]:
    response = await api.http.get("/tasks", params={"scheduler": SCHEDULER, "limit": 1000})
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


async def test_fifty_concurrent_identical_requests_create_exactly_one_task(api: Api) -> None:
    await api.register(SCHEDULER)

    responses = await asyncio.gather(*(_post(api, _body(), header_key="nightly-report") for _ in range(50)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert [t["id"] for t in await _live_tasks(api)] == list(ids)
    assert responses[0].json()["key"] == "nightly-report"


async def test_a_new_task_is_created_once_the_keyed_task_has_finished(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    first = await _post(api, _body(key="k1"))
    assert first.status_code == 201
    async with running_consumer(settings, backends, SCHEDULER):
        await api.wait_for_state(first.json()["id"], "complete")

    second = await _post(api, _body(key="k1"))

    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


async def test_an_aborted_keyed_task_frees_its_key(api: Api) -> None:
    await api.register(SCHEDULER)
    first = (await _post(api, _body(key="k2"))).json()
    await api.http.post(f"/task/{first['id']}/abort")

    second = await _post(api, _body(key="k2"))

    assert second.status_code == 201
    assert second.json()["id"] != first["id"]


async def test_header_and_field_are_the_same_key(api: Api) -> None:
    await api.register(SCHEDULER)
    first = await _post(api, _body(), header_key="same")

    second = await _post(api, _body(key="same"))

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]


async def test_keys_are_per_scheduler(api: Api) -> None:
    await api.register(SCHEDULER)
    await api.register("idem-other")

    first = await _post(api, _body(key="shared"))
    second = await _post(api, {"scheduler": "idem-other", "attributes": ECHO, "key": "shared"})

    assert (first.status_code, second.status_code) == (201, 201)


async def test_header_and_field_that_differ_are_422(api: Api) -> None:
    await api.register(SCHEDULER)

    response = await _post(api, _body(key="one"), header_key="two")

    assert response.status_code == 422
    assert "differ" in response.text


async def test_keys_over_255_characters_or_empty_are_422(api: Api) -> None:
    await api.register(SCHEDULER)

    assert (await _post(api, _body(key="k" * 256))).status_code == 422
    assert (await _post(api, _body(key=""))).status_code == 422
    assert (await _post(api, _body(), header_key="k" * 256)).status_code == 422
    assert (await _post(api, _body(key="k" * 255))).status_code == 201


async def test_a_repeated_batch_answers_the_same_tasks_with_200(api: Api) -> None:
    await api.register(SCHEDULER)
    batch = {"tasks": [_body(key="a"), _body(key="b"), _body()]}

    first = await api.http.post("/task/schedule/batch", json=batch)
    second = await api.http.post("/task/schedule/batch", json={"tasks": batch["tasks"][:2]})

    assert (first.status_code, second.status_code) == (201, 200)
    assert [t["id"] for t in second.json()["tasks"]] == [t["id"] for t in first.json()["tasks"][:2]]


async def test_a_batch_with_one_key_twice_or_an_idempotency_header_is_422(api: Api) -> None:
    await api.register(SCHEDULER)

    twice = await api.http.post("/task/schedule/batch", json={"tasks": [_body(key="x"), _body(key="x")]})
    header = await api.http.post(
        "/task/schedule/batch", json={"tasks": [_body()]}, headers={"Idempotency-Key": "x"}
    )

    assert twice.status_code == 422
    assert header.status_code == 422
    assert "per task" in header.text


async def _unconfirmed_keyed_task(backends: Backends, key: str) -> uuid.UUID:
    """A task as request A leaves it between storing it and its publish being confirmed."""
    now = utcnow()
    task_id = uuid.uuid4()
    await backends.store.create(
        [NewTask(task_id, SCHEDULER, ECHO, now + timedelta(hours=1), owner="admin", key=key)], now=now
    )
    return task_id


async def test_a_repeat_while_the_first_publish_is_unconfirmed_waits_and_then_gets_that_task(
    api: Api, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task_id = await _unconfirmed_keyed_task(backends, "racing")
    with pytest.raises(IdempotencyKeyPending):
        await _unconfirmed_keyed_task(backends, "racing")
    repeat = asyncio.create_task(_post(api, _body(key="racing")))

    await backends.store.mark_published([task_id])

    response = await repeat
    assert response.status_code == 200
    assert response.json()["id"] == str(task_id)


async def test_a_repeat_whose_first_publish_failed_creates_the_task_itself(
    api: Api, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    task_id = await _unconfirmed_keyed_task(backends, "doomed")
    repeat = asyncio.create_task(_post(api, _body(key="doomed")))

    await backends.store.discard([task_id])

    response = await repeat
    assert response.status_code == 201
    assert response.json()["id"] != str(task_id)
    assert [t["id"] for t in await _live_tasks(api)] == [response.json()["id"]]


async def test_a_retry_after_a_lost_first_request_adopts_its_task_and_it_runs(
    api: Api, settings: Settings, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request stored the task, then its answer was lost (a 503 from a Redis cut, or
    its API process killed) before any publish: the retry gets that task, and it runs."""
    monkeypatch.setattr(taskbroker.idempotency, "ADOPT_AFTER", 0.1)
    await api.register(SCHEDULER)
    task_id = await _unconfirmed_keyed_task(backends, "orphan")

    response = await _post(api, _body(key="orphan"))

    assert response.status_code == 200
    assert response.json()["id"] == str(task_id)
    async with running_consumer(settings, backends, SCHEDULER):
        assert (await api.wait_for_state(str(task_id), "complete"))["result"] == {"n": 1}
    assert [t["id"] for t in await _live_tasks(api)] == []


async def test_a_late_discard_by_the_first_request_leaves_an_adopted_task_alone(
    api: Api, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request was only slow: after the retry adopted its task, its own publish fails
    and it discards what it stored; the task the retry was told of must stay."""
    monkeypatch.setattr(taskbroker.idempotency, "ADOPT_AFTER", 0.0)
    await api.register(SCHEDULER)
    task_id = await _unconfirmed_keyed_task(backends, "slow")
    assert (await _post(api, _body(key="slow"))).json()["id"] == str(task_id)

    await backends.store.discard([task_id])

    assert (await api.task(str(task_id)))["state"] == "pending"
    assert (await _post(api, _body(key="slow"))).json()["id"] == str(task_id)
