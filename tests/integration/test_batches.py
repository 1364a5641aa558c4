"""Batch scheduling (all or none) and paging through live tasks, on both backend pairs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from taskbroker.backends import Backends
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.support.inprocess import Api, running_consumer
from tests.support.recorder import Recording
from tests.support.waiting import eventually

SCHEDULER = "bulk"
NOOP = {"function": "taskbroker.runtimes.builtin:noop"}


async def _live_count(api: Api) -> int:
    return int((await api.scheduler(SCHEDULER))["live_tasks"])


async def test_batch_of_300_tasks_all_complete_each_run_once(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    tags = [f"t{i}" for i in range(300)]
    tasks = await api.schedule_batch(SCHEDULER, [recording.call(tag) for tag in tags])
    assert len(tasks) == 300
    assert len({t["id"] for t in tasks}) == 300
    assert {t["state"] for t in tasks} == {"pending"}

    async with running_consumer(settings, backends, SCHEDULER, concurrency=8):

        async def all_done() -> bool:
            return await _live_count(api) == 0

        await eventually(all_done, what="every task of the batch to finish")

    finals = [await api.task(t["id"]) for t in tasks]
    assert Counter(t["state"] for t in finals) == {"complete": 300}
    assert [t["result"]["tag"] for t in finals] == tags
    assert all(t["attempts"] == 1 for t in finals)
    assert {tag: recording.starts(tag) for tag in tags} == dict.fromkeys(tags, 1)
    assert {tag: recording.ends(tag) for tag in tags} == dict.fromkeys(tags, 1)


async def test_batch_naming_one_unknown_scheduler_stores_and_queues_nothing(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register(SCHEDULER)
    batch: list[dict[str, Any]] = [{"scheduler": SCHEDULER, "attributes": NOOP}] * 10
    batch.insert(5, {"scheduler": "missing", "attributes": NOOP})

    response = await api.http.post("/task/schedule/batch", json={"tasks": batch})

    assert response.status_code == 404
    assert "missing" in response.json()["detail"]
    assert await _live_count(api) == 0
    for pattern in ("task", "attributes"):
        keys = backends.store.redis.scan_iter(match=f"{settings.key_prefix}:{pattern}:*")
        assert [k async for k in keys] == []
    assert (await api.http.get("/tasks")).json()["tasks"] == []
    assert (await backends.broker.stats(queue_name(settings.key_prefix, SCHEDULER))).messages == 0


async def test_batch_with_one_invalid_task_is_422_and_stores_nothing(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    batch: list[dict[str, Any]] = [{"scheduler": SCHEDULER, "attributes": NOOP}] * 3
    batch.append({"scheduler": SCHEDULER, "attributes": NOOP, "timeout": "2000-01-01T00:00:00Z"})

    response = await api.http.post("/task/schedule/batch", json={"tasks": batch})

    assert response.status_code == 422
    assert await _live_count(api) == 0


async def test_empty_or_oversized_batch_is_422(api: Api, settings: Settings) -> None:
    await api.register(SCHEDULER)
    one = {"scheduler": SCHEDULER, "attributes": NOOP}

    assert (await api.http.post("/task/schedule/batch", json={"tasks": []})).status_code == 422
    too_many = {"tasks": [one] * (settings.max_batch + 1)}
    assert (await api.http.post("/task/schedule/batch", json=too_many)).status_code == 422
    assert await _live_count(api) == 0


async def _all_pages(api: Api, params: dict[str, Any]) -> tuple[list[str], int]:
    """Every task id the listing returns, following cursors; and how many pages it took."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.http.get("/tasks", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [t["id"] for t in body["tasks"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages
        assert pages < 1000, "the listing never ends"


async def test_task_listing_pages_return_every_live_task_exactly_once(api: Api) -> None:
    await api.register(SCHEDULER)
    await api.register("elsewhere")
    mine = {t["id"] for t in await api.schedule_batch(SCHEDULER, [NOOP] * 250)}
    theirs = {t["id"] for t in await api.schedule_batch("elsewhere", [NOOP] * 30)}

    everything, pages = await _all_pages(api, {"limit": 40})
    assert Counter(everything) == Counter(mine | theirs)
    assert pages > 1

    by_scheduler, _ = await _all_pages(api, {"limit": 40, "scheduler": SCHEDULER})
    assert Counter(by_scheduler) == Counter(mine)

    pending, _ = await _all_pages(api, {"limit": 100, "state": "pending"})
    assert Counter(pending) == Counter(mine | theirs)
    running, _ = await _all_pages(api, {"limit": 100, "state": "running"})
    assert running == []


async def test_task_listing_pages_hold_at_most_limit_tasks(api: Api) -> None:
    await api.register(SCHEDULER)
    await api.schedule_batch(SCHEDULER, [NOOP] * 300)

    listings: list[dict[str, str | int]] = [{"limit": 40}, {"limit": 40, "scheduler": SCHEDULER}]
    for params in listings:
        cursor: str | None = "0"
        while cursor is not None:
            body = (await api.http.get("/tasks", params={**params, "cursor": cursor})).json()
            assert len(body["tasks"]) <= 40, f"a page of {len(body['tasks'])} tasks for limit=40 ({params})"
            cursor = body["next_cursor"]


async def test_task_listing_leaves_out_final_tasks(api: Api) -> None:
    await api.register(SCHEDULER)
    kept = await api.schedule(SCHEDULER, NOOP)
    gone = await api.schedule(SCHEDULER, NOOP)
    assert (await api.http.post(f"/task/{gone['id']}/abort")).status_code == 200

    listed, _ = await _all_pages(api, {"limit": 10})

    assert listed == [kept["id"]]


async def test_task_listing_rejects_bad_parameters(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"state": "finished"}, {"cursor": "abc"}):
        assert (await api.http.get("/tasks", params=params)).status_code == 422, params
