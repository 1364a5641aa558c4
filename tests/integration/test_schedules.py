"""Recurring schedules on the real Redis and RabbitMQ: the API in-process, firers ticking on an
injected clock (time moves by argument, nobody sleeps until a fire time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.models import utcnow
from taskbroker.names import queue_name
from taskbroker.schedule_firer.firer import ScheduleFirer
from taskbroker.schedule_runs import new_run
from taskbroker.schedule_store import FireOutcome, ScheduleStore
from taskbroker.settings import Settings
from tests.support.inprocess import Api, running_consumer

SCHEDULER = "cron"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"from": "schedule"}}


def _store(settings: Settings, backends: Backends) -> ScheduleStore:
    return ScheduleStore(backends.store.redis, settings.key_prefix, settings.schedule_history)


def _firer(settings: Settings, backends: Backends, **kwargs: Any) -> ScheduleFirer:
    return ScheduleFirer(
        settings=settings,
        store=backends.store,
        schedules=_store(settings, backends),
        broker=backends.broker,
        **kwargs,
    )


@pytest.fixture
async def api(real_api: Api) -> Api:
    await real_api.register(SCHEDULER)
    return real_api


@pytest.fixture
def firer(settings: Settings, real: Backends) -> ScheduleFirer:
    return _firer(settings, real)


@pytest.fixture
async def second_firer(settings: Settings) -> AsyncIterator[ScheduleFirer]:
    """Another firing process: its own connections to the same servers."""
    backends = real_backends(settings, connection_name="taskbroker-test-firer-2")
    await backends.broker.connect()
    yield _firer(settings, backends)
    await backends.close()


async def _create(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"name": f"s-{uuid.uuid4().hex[:8]}", "scheduler": SCHEDULER, "attributes": ECHO, **fields}
    response = await api.http.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _get(api: Api, schedule_id: str) -> dict[str, Any]:
    response = await api.http.get(f"/schedules/{schedule_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def _runs(api: Api, schedule_id: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/schedules/{schedule_id}/runs")
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_cron_schedule_fires_at_each_fire_time_and_not_before(api: Api, firer: ScheduleFirer) -> None:
    schedule = await _create(api, cron="*/5 * * * *")
    first = _at(schedule["next_run_at"])
    assert first.minute % 5 == 0
    assert first.second == 0

    assert (await firer.tick(first - timedelta(seconds=1))).fired == 0
    fired = []
    for n in range(3):
        report = await firer.tick(first + timedelta(minutes=5 * n))
        assert report.fired == 1
        fired += report.task_ids

    after = await _get(api, schedule["id"])
    assert _at(after["next_run_at"]) == first + timedelta(minutes=15)
    assert after["runs"] == 3
    assert after["last_task_id"] == fired[-1]
    for task_id in fired:
        task = await api.task(task_id)
        assert task["attributes"] == ECHO
        assert task["scheduler"] == SCHEDULER
        assert task["owner"] == "admin"


async def test_interval_schedule_fires_every_interval_from_creation(api: Api, firer: ScheduleFirer) -> None:
    before = utcnow()
    schedule = await _create(api, trigger="interval", trigger_kwargs={"hours": 12})
    first = _at(schedule["next_run_at"])
    assert before + timedelta(hours=12) <= first <= utcnow() + timedelta(hours=12)

    assert (await firer.tick(first - timedelta(minutes=1))).fired == 0
    assert (await firer.tick(first)).fired == 1
    assert (await firer.tick(first + timedelta(hours=6))).fired == 0
    assert (await firer.tick(first + timedelta(hours=12))).fired == 1
    assert _at((await _get(api, schedule["id"]))["next_run_at"]) == first + timedelta(hours=24)


async def test_date_schedule_fires_once_then_shows_no_next_run(api: Api, firer: ScheduleFirer) -> None:
    run_date = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    schedule = await _create(api, trigger="date", trigger_kwargs={"run_date": run_date.isoformat()})
    assert _at(schedule["next_run_at"]) == run_date

    assert (await firer.tick(run_date)).fired == 1
    assert (await firer.tick(run_date + timedelta(days=1))).fired == 0
    after = await _get(api, schedule["id"])
    assert after["next_run_at"] is None
    assert after["runs"] == 1


async def test_two_firers_create_exactly_one_task_per_fire_time(
    api: Api, firer: ScheduleFirer, second_firer: ScheduleFirer
) -> None:
    schedules = [await _create(api, cron="* * * * *") for _ in range(3)]
    first = min(_at(s["next_run_at"]) for s in schedules)
    fires = 40
    created: list[str] = []
    for minute in range(fires):
        now = first + timedelta(minutes=minute)
        reports = await asyncio.gather(firer.tick(now), second_firer.tick(now))
        created += [task_id for report in reports for task_id in report.task_ids]

    assert len(created) == len(set(created)) == fires * len(schedules)
    for schedule in schedules:
        after = await _get(api, schedule["id"])
        assert after["runs"] == fires
        runs = await _runs(api, schedule["id"])
        fire_times = [r["scheduled_for"] for r in runs]
        assert len(set(fire_times)) == len(fire_times) == fires
    for task_id in created[:: len(schedules)]:
        assert (await api.task(task_id))["state"] == "pending"


async def test_paused_schedule_never_fires_and_resumes_at_the_next_fire_time_without_a_burst(
    api: Api, firer: ScheduleFirer
) -> None:
    schedule = await _create(api, trigger="interval", trigger_kwargs={"minutes": 1})
    paused = await api.http.patch(f"/schedules/{schedule['id']}", json={"enabled": False})
    assert paused.status_code == 200, paused.text
    assert paused.json()["next_run_at"] is None

    for minutes in (1, 10, 60):
        assert (await firer.tick(utcnow() + timedelta(minutes=minutes))).fired == 0

    resumed_at = utcnow()
    resumed = await api.http.patch(f"/schedules/{schedule['id']}", json={"enabled": True})
    assert resumed.status_code == 200, resumed.text
    next_run = _at(resumed.json()["next_run_at"])
    assert resumed_at <= next_run <= utcnow() + timedelta(minutes=1)

    report = await firer.tick(next_run)
    assert report.fired == 1
    assert (await _get(api, schedule["id"]))["runs"] == 1


async def test_forced_run_creates_a_task_at_once_and_keeps_the_next_fire_time(api: Api) -> None:
    schedule = await _create(api, cron="0 3 * * *")

    response = await api.http.post(f"/schedules/{schedule['id']}/run")

    assert response.status_code == 201, response.text
    task = response.json()
    assert task["state"] == "pending"
    assert (await api.task(task["id"]))["attributes"] == ECHO
    after = await _get(api, schedule["id"])
    assert after["next_run_at"] == schedule["next_run_at"]
    assert after["last_task_id"] == task["id"]
    (run,) = await _runs(api, schedule["id"])
    assert run["forced"] is True
    assert run["task_id"] == task["id"]


async def test_schedule_runs_carry_the_templates_retry_policy_and_attempt_timeout(api: Api) -> None:
    policy = {
        "max_attempts": 4,
        "initial_delay": 5.0,
        "backoff_factor": 2.0,
        "max_delay": 60.0,
        "jitter": False,
    }
    schedule = await _create(api, cron="0 3 * * *", retry=policy, attempt_timeout=30)
    assert schedule["retry"] == policy

    response = await api.http.post(f"/schedules/{schedule['id']}/run")

    assert response.status_code == 201, response.text
    task = await api.task(response.json()["id"])
    assert task["retry"] == policy
    assert task["attempt_timeout"] == 30


async def test_run_history_lists_created_tasks_with_their_final_states(
    api: Api, firer: ScheduleFirer, settings: Settings, real: Backends
) -> None:
    schedule = await _create(api, trigger="interval", trigger_kwargs={"minutes": 10})
    first = _at(schedule["next_run_at"])
    (aborted_id,) = (await firer.tick(first)).task_ids
    (completed_id,) = (await firer.tick(first + timedelta(minutes=10))).task_ids
    assert (await api.http.post(f"/task/{aborted_id}/abort")).status_code == 200

    async with running_consumer(settings, real, SCHEDULER):
        await api.wait_for_state(completed_id, "complete")

    runs = await _runs(api, schedule["id"])
    assert [(r["task_id"], r["state"]) for r in runs] == [(completed_id, "complete"), (aborted_id, "aborted")]
    assert _at(runs[1]["scheduled_for"]) == first
    listed = (await api.http.get("/schedules")).json()
    (shown,) = [s for s in listed if s["id"] == schedule["id"]]
    assert shown["last_state"] == "complete"
    assert shown["runs"] == 2


async def test_history_is_bounded(api: Api, settings: Settings, real: Backends) -> None:
    bounded = settings.model_copy(update={"schedule_history": 3})
    schedule = await _create(api, trigger="interval", trigger_kwargs={"minutes": 1})
    firer = _firer(bounded, real)
    first = _at(schedule["next_run_at"])
    for minute in range(5):
        await firer.tick(first + timedelta(minutes=minute))
    store = _store(bounded, real)
    assert len(await store.runs(uuid.UUID(schedule["id"]), limit=100)) == 3
    assert (await _get(api, schedule["id"]))["runs"] == 5


async def test_missed_fire_times_within_the_grace_time_make_one_run(api: Api, firer: ScheduleFirer) -> None:
    schedule = await _create(api, cron="* * * * *")
    first = _at(schedule["next_run_at"])
    late = first + timedelta(minutes=3, seconds=30)  # four fire times passed; grace is 5 minutes

    assert (await firer.tick(late)).fired == 1
    assert (await firer.tick(late)).fired == 0
    assert _at((await _get(api, schedule["id"]))["next_run_at"]) == first + timedelta(minutes=4)


async def test_missed_fire_times_past_the_grace_time_are_skipped(api: Api, firer: ScheduleFirer) -> None:
    schedule = await _create(api, cron="* * * * *")
    first = _at(schedule["next_run_at"])

    report = await firer.tick(first + timedelta(hours=2, seconds=30))

    assert (report.fired, report.skipped) == (0, 1)
    after = await _get(api, schedule["id"])
    assert after["runs"] == 0
    assert _at(after["next_run_at"]) == first + timedelta(hours=2, minutes=1)


async def test_overlap_guard_skips_fire_times_while_the_previous_run_is_live(
    api: Api, firer: ScheduleFirer, settings: Settings, real: Backends
) -> None:
    schedule = await _create(api, trigger="interval", trigger_kwargs={"minutes": 1}, no_overlap=True)
    first = _at(schedule["next_run_at"])
    (live_id,) = (await firer.tick(first)).task_ids

    report = await firer.tick(first + timedelta(minutes=1))
    assert (report.fired, report.overlapped) == (0, 1)

    async with running_consumer(settings, real, SCHEDULER):
        await api.wait_for_state(live_id, "complete")
    assert (await firer.tick(first + timedelta(minutes=2))).fired == 1


async def test_a_run_claimed_by_a_firer_that_died_is_created_by_another(
    api: Api, settings: Settings, real: Backends, firer: ScheduleFirer
) -> None:
    schedule = await _create(api, cron="0 3 * * *")
    store = _store(settings, real)
    record = await store.get(schedule["id"])
    now = record.next_run_at
    assert now is not None
    claimed = new_run(record, now, settings)
    # The claim of a firer that then died before storing the task:
    outcome = await store.fire(record, mode="fire", following=None, record=claimed, now=now)
    assert outcome is FireOutcome.FIRED
    assert (await _runs(api, schedule["id"]))[0]["state"] == "creating"

    assert (await firer.tick(now + timedelta(seconds=1))).recovered == 0  # its firer may still be at it
    report = await firer.tick(now + timedelta(minutes=2))

    assert report.recovered == 1
    task = await api.task(str(claimed.task_id))
    assert task["state"] == "pending"
    stats = await real.broker.stats(queue_name(settings.key_prefix, SCHEDULER))
    assert stats.messages == 1
    assert (await _runs(api, schedule["id"]))[0]["state"] == "pending"


async def test_a_schedule_whose_scheduler_was_deleted_pauses_itself(api: Api, firer: ScheduleFirer) -> None:
    await api.register("doomed")
    schedule = await _create(api, scheduler="doomed", cron="* * * * *")
    assert (await api.http.delete("/scheduler/doomed")).status_code == 204

    assert (await firer.tick(_at(schedule["next_run_at"]))).fired == 1
    after = await _get(api, schedule["id"])
    assert after["enabled"] is False
    assert after["next_run_at"] is None
    assert "doomed" in after["last_error"]


async def test_changing_the_trigger_recomputes_the_next_run(api: Api) -> None:
    schedule = await _create(api, cron="0 3 * * *")
    changed = await api.http.patch(
        f"/schedules/{schedule['id']}", json={"trigger": "interval", "trigger_kwargs": {"hours": 1}}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["cron"] is None
    assert body["trigger"] == "interval"
    assert _at(body["next_run_at"]) <= utcnow() + timedelta(hours=1)


async def test_schedule_names_are_unique(api: Api) -> None:
    schedule = await _create(api, cron="0 3 * * *")
    again = await api.http.post(
        "/schedules", json={"name": schedule["name"], "scheduler": SCHEDULER, "cron": "0 4 * * *"}
    )
    assert again.status_code == 409


async def test_deleted_schedule_is_gone_and_fires_no_more(api: Api, firer: ScheduleFirer) -> None:
    schedule = await _create(api, cron="* * * * *")
    assert (await api.http.delete(f"/schedules/{schedule['id']}")).status_code == 204
    assert (await api.http.get(f"/schedules/{schedule['id']}")).status_code == 404
    assert (await api.http.delete(f"/schedules/{schedule['id']}")).status_code == 404
    assert (await firer.tick(_at(schedule["next_run_at"]))).fired == 0


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"trigger": "cron", "trigger_kwargs": {"hour": 25}}, ["body", "trigger_kwargs", "hour"]),
        ({"trigger": "cron", "trigger_kwargs": {"bogus": 1}}, ["body", "trigger_kwargs", "bogus"]),
        ({"trigger": "interval", "trigger_kwargs": {"hours": "x"}}, ["body", "trigger_kwargs", "hours"]),
        ({"trigger": "interval", "trigger_kwargs": {"hours": 10**40}}, ["body", "trigger_kwargs", "hours"]),
        (
            {"trigger": "date", "trigger_kwargs": {"run_date": "2020-01-01T00:00:00Z"}},
            ["body", "trigger_kwargs", "run_date"],
        ),
        ({"cron": "0 12 * * 1", "timezone": "Nowhere/Special"}, ["body", "timezone"]),
        ({"cron": "0 25 * * *"}, ["body", "cron"]),
        ({"trigger": "sometimes"}, ["body", "trigger"]),
        ({}, ["body"]),
    ],
)
async def test_bad_trigger_arguments_are_422_naming_the_argument(
    api: Api, fields: dict[str, Any], location: list[str]
) -> None:
    response = await api.http.post("/schedules", json={"name": "bad", "scheduler": SCHEDULER, **fields})

    assert response.status_code == 422, response.text
    locations = [error["loc"][: len(location)] for error in response.json()["detail"]]
    assert location in locations


async def test_bad_trigger_in_a_change_is_422_and_changes_nothing(api: Api) -> None:
    schedule = await _create(api, cron="0 3 * * *")
    response = await api.http.patch(f"/schedules/{schedule['id']}", json={"cron": "0 3 * * mon-xyz"})
    assert response.status_code == 422, response.text
    assert (await _get(api, schedule["id"]))["cron"] == "0 3 * * *"


async def test_schedule_on_an_unknown_scheduler_is_404(api: Api) -> None:
    response = await api.http.post("/schedules", json={"name": "n", "scheduler": "nope", "cron": "0 3 * * *"})
    assert response.status_code == 404


async def test_clients_may_not_manage_schedules(api: Api) -> None:
    token = await api.http.post("/token", json={"role": "client"})
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    body = {"name": "n", "scheduler": SCHEDULER, "cron": "0 3 * * *"}
    assert (await api.http.post("/schedules", json=body, headers=headers)).status_code == 403
    assert (await api.http.get("/schedules", headers=headers)).status_code == 403


async def test_schedules_fire_on_the_embedded_backends_of_taskbroker_dev(
    settings: Settings, embedded: Backends
) -> None:
    from tests.support.inprocess import api_client

    async with api_client(settings, embedded) as embedded_api:
        await embedded_api.register(SCHEDULER)
        schedule = await _create(embedded_api, cron="*/5 * * * *", no_overlap=True)
        firer = _firer(settings, embedded)
        first = _at(schedule["next_run_at"])
        (task_id,) = (await firer.tick(first)).task_ids
        assert (await firer.tick(first + timedelta(minutes=5))).overlapped == 1
        forced = await embedded_api.http.post(f"/schedules/{schedule['id']}/run")
        assert forced.status_code == 201, forced.text
        runs = await _runs(embedded_api, schedule["id"])
        assert [r["task_id"] for r in runs] == [forced.json()["id"], task_id]
        assert {r["state"] for r in runs} == {"pending"}


async def test_creating_the_same_run_twice_stores_and_publishes_it_once(
    api: Api, settings: Settings, real: Backends
) -> None:
    from taskbroker.schedule_runs import create_run

    schedule = await _create(api, cron="0 3 * * *")
    store = _store(settings, real)
    record = await store.get(schedule["id"])
    claimed = new_run(record, utcnow(), settings)
    assert await store.fire(record, mode="force", following=None, record=claimed, now=utcnow())
    kwargs: dict[str, Any] = {
        "store": real.store,
        "schedules": store,
        "broker": real.broker,
        "settings": settings,
    }

    first, second = await asyncio.gather(create_run(claimed, **kwargs), create_run(claimed, **kwargs))

    assert first.id == second.id == claimed.task_id
    stats = await real.broker.stats(queue_name(settings.key_prefix, SCHEDULER))
    assert stats.messages == 1
