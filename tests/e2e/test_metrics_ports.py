"""The metrics ports of real `taskbroker worker` and `taskbroker timeout-daemon` processes, and the
API's /metrics beside them, scraped over HTTP and parsed as Prometheus would."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from taskbroker.models import utcnow
from tests.support.blocking_api import BlockingApi
from tests.support.processes import TEST_ALLOW, ManagedProcess, Processes, free_port, process_env
from tests.support.scrape import Scrape
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "measured"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
FAIL = {"function": "taskbroker.runtimes.builtin:fail"}


def scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return Scrape(response.text)


def start_worker(processes: Processes, metrics_port: int) -> ManagedProcess:
    args = ["worker", "--scheduler", SCHEDULER, "--metrics-port", str(metrics_port)]
    for module in TEST_ALLOW:
        args += ["--allow", module]
    worker = processes.start("worker", *args)
    worker.wait_for_event("consumer.subscribed")
    return worker


def _final(http: httpx.Client, url: str, task_id: str) -> bool:
    return http.get(f"{url}/task/{task_id}").json()["state"] in {"complete", "failed", "timeout"}


def test_a_worker_serves_its_run_counts_on_its_metrics_port(processes: Processes, http: httpx.Client) -> None:
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    port = free_port()
    worker = start_worker(processes, port)
    assert worker.wait_for_event("metrics.serving")["port"] == port

    body = {"tasks": [{"scheduler": SCHEDULER, "attributes": a} for a in (ECHO, ECHO, FAIL)]}
    tasks = http.post(f"{url}/task/schedule/batch", json=body).json()["tasks"]
    eventually_sync(lambda: all(_final(http, url, t["id"]) for t in tasks), what="the tasks to end")
    metrics = scrape(f"http://127.0.0.1:{port}/metrics")

    by = {"scheduler": SCHEDULER}
    assert metrics.value("taskbroker_tasks_started_total", **by) == 3
    assert metrics.value("taskbroker_tasks_finished_total", **by, state="complete") == 2
    assert metrics.value("taskbroker_tasks_finished_total", **by, state="failed") == 1
    assert metrics.value("taskbroker_task_run_seconds_count", **by) == 3
    assert metrics.value("taskbroker_worker_running_tasks", **by) == 0
    assert metrics.value("taskbroker_tasks_scheduled_total", **by) is None  # the API counts those
    assert metrics.value("process_resident_memory_bytes")
    metrics.assert_labels_bounded()

    api_metrics = Scrape(http.get(f"{url}/metrics").text)
    assert api_metrics.value("taskbroker_tasks_scheduled_total", **by) == 3
    assert api_metrics.value("taskbroker_queue_consumers", **by) == 1
    assert api_metrics.value("taskbroker_queue_messages", **by) == 0
    api_metrics.assert_labels_bounded()


def test_a_timeout_daemon_serves_its_sweeps_and_expiries_on_its_metrics_port(
    processes: Processes, http: httpx.Client
) -> None:
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    timeout = (utcnow() + timedelta(seconds=1)).isoformat()
    task = http.post(
        f"{url}/task/schedule", json={"scheduler": SCHEDULER, "attributes": ECHO, "timeout": timeout}
    ).json()
    port = free_port()
    processes.start("timeout-daemon", "timeout-daemon", "--metrics-port", str(port))

    eventually_sync(lambda: _final(http, url, task["id"]), what="the task to time out")
    metrics = scrape(f"http://127.0.0.1:{port}/metrics")

    labels = {"scheduler": SCHEDULER, "previous_state": "pending"}
    assert metrics.value("taskbroker_timeout_daemon_expired_total", **labels) == 1
    assert metrics.value("taskbroker_tasks_finished_total", scheduler=SCHEDULER, state="timeout") == 1
    assert (metrics.value("taskbroker_timeout_daemon_sweeps_total") or 0) >= 1
    assert (metrics.value("taskbroker_timeout_daemon_sweep_duration_seconds_count") or 0) >= 1
    assert metrics.value("taskbroker_timeout_daemon_requeued_total") == 0
    metrics.assert_labels_bounded()


def test_a_metrics_port_already_taken_stops_the_worker_with_a_clear_error(
    processes: Processes, http: httpx.Client
) -> None:
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    port = free_port()
    start_worker(processes, port)

    second = processes.start("second", "worker", "--scheduler", SCHEDULER, "--metrics-port", str(port))

    assert second.wait() == 1, second.describe()
    assert f"Cannot serve metrics on 127.0.0.1:{port}" in second.stderr()


def test_every_worker_log_line_about_a_task_names_its_id_scheduler_and_attempt(
    processes: Processes, http: httpx.Client
) -> None:
    """JSON logs (TASKBROKER_LOG_FORMAT=json): completed, failed and aborted tasks alike."""
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    worker = start_worker(processes, free_port())
    sleep = {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 300}}
    body = {"tasks": [{"scheduler": SCHEDULER, "attributes": a} for a in (ECHO, FAIL, sleep)]}
    echo, fail, sleeping = http.post(f"{url}/task/schedule/batch", json=body).json()["tasks"]
    worker.wait_for_event("task.complete")
    worker.wait_for_event("task.failed")
    eventually_sync(
        lambda: http.get(f"{url}/task/{sleeping['id']}").json()["state"] == "running",
        what="the sleeping task to run",
    )
    assert http.post(f"{url}/task/{sleeping['id']}/abort").status_code == 200
    worker.wait_for_event("task.cancelled")

    task_lines = [e for e in worker.events() if str(e.get("event", "")).startswith("task.")]
    assert {e["event"] for e in task_lines} >= {
        "task.started",
        "task.complete",
        "task.failed",
        "task.cancel_requested",
        "task.cancelled",
    }
    for line in task_lines:
        assert {"task_id", "scheduler", "attempt"} <= line.keys(), line
        assert line["scheduler"] == SCHEDULER
        assert line["attempt"] == 1, line
    assert {e["task_id"] for e in task_lines} == {echo["id"], fail["id"], sleeping["id"]}


def test_dev_shows_the_api_consumer_and_daemon_metrics_on_its_api(
    key_prefix: str, tmp_path: Path, http: httpx.Client
) -> None:
    processes = Processes(tmp_path, process_env(key_prefix=key_prefix, redis_url=None, amqp_url=None))
    try:
        dev = processes.start("dev", "dev", "--port", "0")
        url = dev.wait_for_stdout(r"serving at (http://127\.0\.0\.1:\d+) on embedded").group(1)
        api = BlockingApi(http, url)
        api.wait_for_state(api.schedule("default", ECHO)["id"])
        metrics = Scrape(http.get(f"{url}/metrics").text)
    finally:
        processes.kill_all()

    by = {"scheduler": "default"}
    assert metrics.value("taskbroker_tasks_scheduled_total", **by) == 1
    assert metrics.value("taskbroker_tasks_finished_total", **by, state="complete") == 1
    assert metrics.value("taskbroker_queue_consumers", **by) == 1
    assert (metrics.value("taskbroker_timeout_daemon_sweeps_total") or 0) >= 1
    assert metrics.value("taskbroker_redis_up") == 1
