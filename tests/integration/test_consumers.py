"""`GET /consumers` and pausing a scheduler, in process: who may see and do what, what the
inventory shows of a consumer while it runs and after it stops, and a paused consumer that
leaves its scheduler's tasks in the queue until resumed (on both backend pairs)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taskbroker.backends import Backends
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.support.inprocess import Api, api_client, running_consumer
from tests.support.recorder import Recording
from tests.support.scrape import Scrape
from tests.support.waiting import eventually

SCHEDULER = "inventory"


async def _token(api: Api, role: str, schedulers: list[str] | None = None) -> dict[str, str]:
    response = await api.http.post("/token", json={"role": role, "schedulers": schedulers})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_a_running_consumer_is_listed_with_its_task_and_leaves_at_once_when_it_stops(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    async with running_consumer(settings, backends, SCHEDULER, concurrency=2) as consumer:
        task = await api.schedule(SCHEDULER, recording.call("listed", asynchronous=True, seconds=3600))

        async def listed_running() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await api.http.get("/consumers")).json()["consumers"]
            return found if found and found[0]["running"] == [task["id"]] else []

        (listed,) = await eventually(listed_running, what="the consumer listed with its task")
        assert listed["id"] == consumer.consumer_id
        assert listed["scheduler"] == SCHEDULER
        assert listed["concurrency"] == 2
        assert listed["paused"] is False
        assert (await api.http.post(f"/task/{task['id']}/abort")).status_code == 200

    assert (await api.http.get("/consumers")).json() == {"consumers": []}


async def test_consumers_are_for_admins_and_for_worker_tokens_of_their_schedulers(
    real_api: Api, settings: Settings, real: Backends
) -> None:
    await real_api.register("alpha")
    await real_api.register("beta")
    client = await _token(real_api, "client")
    alpha_worker = await _token(real_api, "worker", ["alpha"])
    async with (
        running_consumer(settings, real, "alpha") as alpha,
        running_consumer(settings, real, "beta") as beta,
    ):

        async def both_listed() -> bool:
            return len((await real_api.http.get("/consumers")).json()["consumers"]) == 2

        await eventually(both_listed, what="both consumers listed")
        everyone = (await real_api.http.get("/consumers")).json()["consumers"]
        only_beta = (await real_api.http.get("/consumers", params={"scheduler": "beta"})).json()
        as_worker = await real_api.http.get("/consumers", headers=alpha_worker)
        other_scheduler = await real_api.http.get(
            "/consumers", params={"scheduler": "beta"}, headers=alpha_worker
        )
        as_client = await real_api.http.get("/consumers", headers=client)
        bad_name = await real_api.http.get("/consumers", params={"scheduler": "no such!"})

    assert [(c["scheduler"], c["id"]) for c in everyone] == [
        ("alpha", alpha.consumer_id),
        ("beta", beta.consumer_id),
    ]
    assert [c["id"] for c in only_beta["consumers"]] == [beta.consumer_id]
    assert [c["id"] for c in as_worker.json()["consumers"]] == [alpha.consumer_id]
    assert other_scheduler.status_code == 403, other_scheduler.text
    assert as_client.status_code == 403, as_client.text
    assert bad_name.status_code == 422, bad_name.text


async def test_pause_and_resume_are_admin_only_idempotent_and_404_for_an_unknown_scheduler(
    real_api: Api,
) -> None:
    await real_api.register(SCHEDULER)
    client = await _token(real_api, "client")
    worker = await _token(real_api, "worker")

    first = await real_api.http.post(f"/scheduler/{SCHEDULER}/pause")
    again = await real_api.http.post(f"/scheduler/{SCHEDULER}/pause")
    shown = (await real_api.http.get(f"/scheduler/{SCHEDULER}")).json()
    listed = (await real_api.http.get("/schedulers")).json()
    resumed = await real_api.http.post(f"/scheduler/{SCHEDULER}/resume")
    resumed_again = await real_api.http.post(f"/scheduler/{SCHEDULER}/resume")

    assert (first.status_code, first.json()["paused"]) == (200, True)
    assert (again.status_code, again.json()["paused"]) == (200, True)
    assert shown["paused"] is True
    assert [s["paused"] for s in listed] == [True]
    assert (resumed.status_code, resumed.json()["paused"]) == (200, False)
    assert (resumed_again.status_code, resumed_again.json()["paused"]) == (200, False)
    assert (await real_api.http.get(f"/scheduler/{SCHEDULER}")).json()["paused"] is False
    for action in ("pause", "resume"):
        unknown = await real_api.http.post(f"/scheduler/nosuch/{action}")
        assert unknown.status_code == 404, unknown.text
        for headers in (client, worker):
            refused = await real_api.http.post(f"/scheduler/{SCHEDULER}/{action}", headers=headers)
            assert refused.status_code == 403, refused.text


async def test_a_deleted_scheduler_registered_again_is_not_paused(real_api: Api) -> None:
    await real_api.register(SCHEDULER)
    assert (await real_api.http.post(f"/scheduler/{SCHEDULER}/pause")).status_code == 200
    assert (await real_api.http.delete(f"/scheduler/{SCHEDULER}")).status_code == 204
    await real_api.register(SCHEDULER)

    assert (await real_api.http.get(f"/scheduler/{SCHEDULER}")).json()["paused"] is False


async def test_a_paused_consumer_leaves_new_tasks_in_the_queue_and_runs_them_once_resumed(
    api: Api, settings: Settings, backends: Backends, recording: Recording
) -> None:
    await api.register(SCHEDULER)
    async with running_consumer(settings, backends, SCHEDULER) as consumer:
        assert (await api.http.post(f"/scheduler/{SCHEDULER}/pause")).status_code == 200

        async def paused() -> bool:
            return consumer.paused.is_set()

        await eventually(paused, what="the consumer to pause")
        assert consumer.subscription_state() == "paused"
        tasks = [await api.schedule(SCHEDULER, recording.call(f"held-back-{i}")) for i in range(3)]
        stats = await backends.broker.stats(queue_name(settings.key_prefix, SCHEDULER))
        assert (stats.messages, stats.consumers) == (3, 0)

        async def reported_paused() -> bool:
            found = (await api.http.get("/consumers")).json()["consumers"]
            return bool(found) and found[0]["paused"] is True

        await eventually(reported_paused, what="its record to say paused")
        assert [(await api.task(t["id"]))["state"] for t in tasks] == ["pending"] * 3

        assert (await api.http.post(f"/scheduler/{SCHEDULER}/resume")).status_code == 200
        for task in tasks:
            assert (await api.wait_for_state(task["id"]))["state"] == "complete"
        assert consumer.subscription_state() == "subscribed"
    assert [recording.starts(f"held-back-{i}") for i in range(3)] == [1, 1, 1]


@pytest.mark.parametrize("paused", [True, False])
async def test_the_api_exports_whether_each_scheduler_is_paused(
    settings: Settings, real: Backends, paused: bool
) -> None:
    scheduler = f"paused-{uuid.uuid4().hex[:8]}"
    async with api_client(settings, real) as api:
        await api.register(scheduler)
        if paused:
            assert (await api.http.post(f"/scheduler/{scheduler}/pause")).status_code == 200
        scrape = Scrape((await api.http.get("/metrics")).text)

    assert scrape.value("taskbroker_scheduler_paused", scheduler=scheduler) == (1 if paused else 0)
