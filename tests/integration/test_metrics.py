"""GET /metrics on the API, scraped and parsed as Prometheus would, after real tasks ran through
the real Redis and RabbitMQ: counts match what happened, gauges match what is there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from taskbroker.backends import Backends, real_backends
from taskbroker.models import utcnow
from taskbroker.settings import Settings
from tests.conftest import AMQP_URL, REDIS_URL, proxied_url
from tests.support.inprocess import Api, api_client, running_consumer
from tests.support.scrape import Scrape
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
FAIL = {"function": "taskbroker.runtimes.builtin:fail"}
SLEEP = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 300}}


@pytest.fixture
def scheduler() -> str:
    """A scheduler name no other test uses: counters are per process, labelled by scheduler."""
    return f"metrics-{uuid.uuid4().hex[:10]}"


async def scrape(api: Api) -> Scrape:
    response = await api.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def _token(api: Api, role: str) -> str:
    response = await api.http.post("/token", json={"role": role})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def test_metrics_need_an_admin_or_worker_token(real_api: Api) -> None:
    anonymous = await real_api.http.get("/metrics", headers={"Authorization": ""})
    client = await real_api.http.get(
        "/metrics", headers={"Authorization": f"Bearer {await _token(real_api, 'client')}"}
    )
    worker = await real_api.http.get(
        "/metrics", headers={"Authorization": f"Bearer {await _token(real_api, 'worker')}"}
    )

    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert client.status_code == 403, client.text
    assert worker.status_code == 200, worker.text
    assert Scrape(worker.text).value("taskbroker_redis_up") == 1


async def test_tasks_scheduled_started_and_finished_are_counted_by_scheduler_and_state(
    real_api: Api, real: Backends, settings: Settings, scheduler: str
) -> None:
    await real_api.register(scheduler)
    async with running_consumer(settings, real, scheduler):
        tasks = await real_api.schedule_batch(scheduler, [ECHO, ECHO, ECHO, FAIL])
        for task in tasks:
            await real_api.wait_for_state(task["id"])
        metrics = await scrape(real_api)

    by = {"scheduler": scheduler}
    assert metrics.value("taskbroker_tasks_scheduled_total", **by) == 4
    assert metrics.value("taskbroker_tasks_started_total", **by) == 4
    assert metrics.value("taskbroker_tasks_finished_total", **by, state="complete") == 3
    assert metrics.value("taskbroker_tasks_finished_total", **by, state="failed") == 1
    assert metrics.value("taskbroker_task_run_seconds_count", **by) == 4
    assert metrics.value("taskbroker_task_queue_wait_seconds_count", **by) == 4
    assert metrics.value("taskbroker_task_queue_wait_seconds_bucket", **by, le="+Inf") == 4
    assert metrics.value("taskbroker_worker_running_tasks", **by) == 0
    assert metrics.value("taskbroker_live_tasks", **by) == 0
    metrics.assert_labels_bounded()


async def test_queue_depth_is_the_backlog_and_live_tasks_are_pending(real_api: Api, scheduler: str) -> None:
    await real_api.register(scheduler)
    await real_api.schedule_batch(scheduler, [ECHO] * 7)

    metrics = await scrape(real_api)

    assert metrics.value("taskbroker_queue_messages", scheduler=scheduler) == 7
    assert metrics.value("taskbroker_queue_consumers", scheduler=scheduler) == 0
    assert metrics.value("taskbroker_live_tasks", scheduler=scheduler) == 7
    assert metrics.value("taskbroker_live_tasks_by_state", state="pending") == 7
    assert metrics.value("taskbroker_live_tasks_by_state", state="running") == 0
    assert metrics.value("taskbroker_schedulers") == 1
    assert metrics.value("taskbroker_rabbitmq_up") == 1


async def test_a_running_task_and_its_consumer_show_until_it_is_aborted(
    real_api: Api, real: Backends, settings: Settings, scheduler: str
) -> None:
    await real_api.register(scheduler)
    async with running_consumer(settings, real, scheduler, concurrency=1):
        task = await real_api.schedule(scheduler, SLEEP)
        await real_api.wait_for_state(task["id"], "running")

        async def running_shows() -> Scrape | None:
            metrics = await scrape(real_api)
            return metrics if metrics.value("taskbroker_worker_running_tasks", scheduler=scheduler) else None

        found = await eventually(running_shows, what="the running task in the metrics")
        assert found is not None
        metrics = found
        assert metrics.value("taskbroker_queue_consumers", scheduler=scheduler) == 1
        assert metrics.value("taskbroker_live_tasks_by_state", state="running") == 1
        assert metrics.value("taskbroker_live_tasks_by_state", state="pending") == 0
        assert metrics.value("taskbroker_live_tasks", scheduler=scheduler) == 1

        assert (await real_api.http.post(f"/task/{task['id']}/abort")).status_code == 200
        await eventually(
            lambda: _gauge_is(real_api, "taskbroker_worker_running_tasks", scheduler, 0),
            what="the cancelled run to end",
        )
        metrics = await scrape(real_api)

    assert metrics.value("taskbroker_tasks_finished_total", scheduler=scheduler, state="aborted") == 1
    assert metrics.value("taskbroker_tasks_finished_total", scheduler=scheduler, state="complete") is None
    assert metrics.value("taskbroker_task_run_seconds_count", scheduler=scheduler) == 1


async def _gauge_is(api: Api, name: str, scheduler: str, wanted: float) -> bool:
    return (await scrape(api)).value(name, scheduler=scheduler) == wanted


async def test_a_task_past_its_timeout_when_claimed_counts_as_timeout_not_started(
    real_api: Api, real: Backends, settings: Settings, scheduler: str
) -> None:
    await real_api.register(scheduler)
    timeout = utcnow() + timedelta(seconds=1)
    task = await real_api.schedule(scheduler, ECHO, expires=timeout)

    async def timeout_passed() -> bool:
        return utcnow() > timeout

    await eventually(timeout_passed, what="the task's timeout to pass")
    async with running_consumer(settings, real, scheduler):
        await real_api.wait_for_state(task["id"], "timeout")
        metrics = await scrape(real_api)

    assert metrics.value("taskbroker_tasks_finished_total", scheduler=scheduler, state="timeout") == 1
    assert metrics.value("taskbroker_tasks_started_total", scheduler=scheduler) is None


# API request latency


async def test_request_latency_is_labelled_by_route_template_and_status(real_api: Api) -> None:
    task_id = str(uuid.uuid4())
    assert (await real_api.http.get(f"/task/{task_id}")).status_code == 404
    assert (await real_api.http.get(f"/no/such/{task_id}")).status_code == 404
    too_big = b"x" * (Settings().max_body_bytes + 1)
    assert (await real_api.http.post("/task/schedule", content=too_big)).status_code == 413

    metrics = await scrape(real_api)

    name = "taskbroker_http_request_duration_seconds_count"
    assert metrics.value(name, method="GET", route="/task/{task_id}", status="404")
    assert metrics.value(name, method="GET", route="<unmatched>", status="404")
    assert metrics.value(name, method="POST", route="<unmatched>", status="413")
    routes = {labels["route"] for labels in metrics.label_sets(name)}
    assert not any(task_id in route for route in routes), routes
    metrics.assert_labels_bounded()


# Outages: the scrape still answers


@pytest.fixture
async def api_via_proxies(
    settings: Settings, real: Backends, redis_proxy: TcpProxy, amqp_proxy: TcpProxy
) -> AsyncIterator[Api]:
    proxied = settings.model_copy(
        update={
            "redis_url": proxied_url(REDIS_URL, redis_proxy),
            "amqp_url": proxied_url(AMQP_URL, amqp_proxy),
        }
    )
    backends = real_backends(proxied, connection_name="taskbroker-test-metrics-proxied")
    try:
        async with api_client(proxied, backends) as api:
            yield api
    finally:
        redis_proxy.restore()
        amqp_proxy.restore()
        await backends.close()


async def test_a_scrape_with_rabbitmq_down_answers_with_rabbitmq_up_0_and_no_queue_gauges(
    api_via_proxies: Api, amqp_proxy: TcpProxy, scheduler: str
) -> None:
    api = api_via_proxies
    await api.register(scheduler)
    await api.schedule(scheduler, ECHO)
    amqp_proxy.cut()

    metrics = await scrape(api)

    assert metrics.value("taskbroker_rabbitmq_up") == 0
    assert metrics.value("taskbroker_queue_messages", scheduler=scheduler) is None
    assert metrics.value("taskbroker_redis_up") == 1
    assert metrics.value("taskbroker_live_tasks", scheduler=scheduler) == 1


async def test_a_scrape_with_redis_down_answers_with_redis_up_0_and_the_queue_depth(
    api_via_proxies: Api, redis_proxy: TcpProxy, scheduler: str
) -> None:
    api = api_via_proxies
    await api.register(scheduler)
    await api.schedule(scheduler, ECHO)
    await scrape(api)  # learns the scheduler names while Redis answers
    redis_proxy.cut()

    metrics = await scrape(api)

    assert metrics.value("taskbroker_redis_up") == 0
    assert metrics.value("taskbroker_live_tasks", scheduler=scheduler) is None
    assert metrics.value("taskbroker_rabbitmq_up") == 1
    assert metrics.value("taskbroker_queue_messages", scheduler=scheduler) == 1
    assert metrics.value("taskbroker_tasks_scheduled_total", scheduler=scheduler) == 1


async def test_delayed_tasks_and_retries_are_counted_by_scheduler(
    real_api: Api, real: Backends, settings: Settings, scheduler: str
) -> None:
    await real_api.register(scheduler)
    for _ in range(2):
        response = await real_api.http.post(
            "/task/schedule", json={"scheduler": scheduler, "attributes": ECHO, "delay": 600}
        )
        assert response.status_code == 201, response.text
    retried = await real_api.http.post(
        "/task/schedule",
        json={"scheduler": scheduler, "attributes": FAIL, "retry": {"max_attempts": 2, "initial_delay": 600}},
    )
    assert retried.status_code == 201, retried.text
    async with running_consumer(settings, real, scheduler):
        await real_api.wait_for_state(retried.json()["id"], "delayed")
        metrics = await scrape(real_api)

    assert metrics.value("taskbroker_delayed_tasks", scheduler=scheduler) == 3
    assert metrics.value("taskbroker_live_tasks", scheduler=scheduler) == 3
    assert metrics.value("taskbroker_tasks_retried_total", scheduler=scheduler) == 1
    assert metrics.value("taskbroker_live_tasks_by_state", state="delayed") == 3
