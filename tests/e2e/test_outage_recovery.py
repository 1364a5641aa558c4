"""Consumers and the timeout daemon ride out RabbitMQ and Redis going away (a TCP proxy the test
cuts): they keep running, reconnect, and every task runs once, with no second concurrent run."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AMQP_URL, REDIS_URL, proxied_url
from tests.support.blocking_api import BlockingApi
from tests.support.processes import ManagedProcess, Processes, free_port
from tests.support.recorder import Recording
from tests.support.scrape import Scrape
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "outage"


def _count_events(process: ManagedProcess, event: str, at_least: int) -> None:
    eventually_sync(
        lambda: len(process.events(event)) >= at_least, what=f"{process.name} to log {event} x{at_least}"
    )


def test_consumer_that_loses_rabbitmq_mid_task_finishes_it_once_and_resumes(
    processes: Processes, http: httpx.Client, recording: Recording, amqp_proxy: TcpProxy
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    worker = processes.worker(
        "worker", SCHEDULER, env={"TASKBROKER_AMQP_URL": proxied_url(AMQP_URL, amqp_proxy)}
    )
    running = api.schedule(SCHEDULER, recording.call("running", asynchronous=True, seconds=2))
    eventually_sync(lambda: recording.starts("running"), what="the task to start")

    amqp_proxy.cut()
    _count_events(worker, "consumer.subscription_lost", 1)
    queued_meanwhile = api.schedule(SCHEDULER, recording.call("queued-meanwhile"))
    amqp_proxy.restore()
    _count_events(worker, "consumer.subscribed", 2)

    assert api.wait_for_state(running["id"])["state"] == "complete"
    assert api.wait_for_state(queued_meanwhile["id"])["state"] == "complete"
    assert recording.starts("running") == 1
    assert recording.starts("queued-meanwhile") == 1
    assert api.task(running["id"])["attempts"] == 1
    assert worker.returncode is None


def test_consumer_and_daemon_that_lose_redis_mid_task_record_the_outcome_once(
    processes: Processes, http: httpx.Client, recording: Recording, redis_proxy: TcpProxy
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    through_proxy = {"TASKBROKER_REDIS_URL": proxied_url(REDIS_URL, redis_proxy)}
    worker = processes.worker("worker", SCHEDULER, env=through_proxy)
    daemon = processes.start("timeout-daemon", "timeout-daemon", env=through_proxy)
    daemon.wait_for_event("timeout_daemon.started")
    task = api.schedule(SCHEDULER, recording.call("through-outage", asynchronous=True, seconds=3))
    eventually_sync(lambda: recording.starts("through-outage"), what="the task to start")

    redis_proxy.cut()
    _count_events(worker, "consumer.heartbeat_failed", 1)
    _count_events(daemon, "timeout_daemon.sweep_failed", 1)
    redis_proxy.restore()

    assert api.wait_for_state(task["id"])["state"] == "complete"
    assert recording.starts("through-outage") == 1
    assert api.task(task["id"])["attempts"] == 1
    after = api.schedule(SCHEDULER, recording.call("after-outage"))
    assert api.wait_for_state(after["id"])["state"] == "complete"
    assert worker.returncode is None
    assert daemon.returncode is None


def test_consumer_cut_off_from_redis_past_its_lease_stops_its_run_before_another_takes_over(
    processes: Processes, http: httpx.Client, recording: Recording, redis_proxy: TcpProxy
) -> None:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    lease = {"TASKBROKER_LEASE": "2"}
    isolated = processes.worker(
        "isolated", SCHEDULER, env={**lease, "TASKBROKER_REDIS_URL": proxied_url(REDIS_URL, redis_proxy)}
    )
    task = api.schedule(
        SCHEDULER, recording.call("fenced", asynchronous=True, first_run_seconds=3600, seconds=0)
    )
    eventually_sync(lambda: recording.starts("fenced"), what="the first run to start")
    healthy = processes.worker("healthy", SCHEDULER, env=lease)
    processes.timeout_daemon()

    redis_proxy.cut()  # the isolated consumer can no longer renew its lease
    final = api.wait_for_state(task["id"])
    redis_proxy.restore()

    assert final["state"] == "complete", final
    assert final["attempts"] == 2
    assert isolated.events("task.fenced"), isolated.describe()
    first_start, first_stop, second_start, second_end = recording.events("fenced")
    assert (first_start.event, first_start.pid) == ("start", isolated.pid)
    assert (first_stop.event, first_stop.pid) == ("cancelled", isolated.pid)
    assert (second_start.event, second_start.pid) == ("start", healthy.pid)
    assert second_end.event == "end"
    assert first_stop.at < second_start.at, "the second run began before the first was stopped"


def _subscribed_gauge(metrics_port: int) -> float | None:
    response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Scrape(response.text).value("taskbroker_worker_subscribed", scheduler=SCHEDULER)


def test_worker_whose_scheduler_is_deleted_and_registered_again_consumes_again(
    processes: Processes, http: httpx.Client, recording: Recording
) -> None:
    # The hardening issue's scenario: the worker stayed alive, silent and deaf after this.
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER)
    metrics_port = free_port()
    worker = processes.worker("worker", SCHEDULER, metrics_port=metrics_port)
    assert _subscribed_gauge(metrics_port) == 1

    assert http.delete(f"{url}/scheduler/{SCHEDULER}").status_code == 204
    lost = worker.wait_for_event("consumer.subscription_lost")
    assert lost["reason"] == "cancelled_by_broker"
    worker.wait_for_event("consumer.subscribe_failed")  # the queue is missing: it waits
    assert _subscribed_gauge(metrics_port) == 0

    api.register(SCHEDULER)
    task = api.schedule(SCHEDULER, recording.call("after-re-register"))

    assert api.wait_for_state(task["id"])["state"] == "complete"
    assert recording.starts("after-re-register") == 1
    assert api.scheduler(SCHEDULER)["consumers"] == 1
    assert _subscribed_gauge(metrics_port) == 1
    assert worker.returncode is None
