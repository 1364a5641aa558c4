"""A real `taskbroker worker` for a `kubernetes` scheduler, on the real Redis and RabbitMQ, running
tasks as Jobs on the fake Kubernetes API server this test process serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.blocking_api import BlockingApi
from tests.support.fake_kubernetes import FakeKubernetes, Script
from tests.support.processes import ManagedProcess, Processes
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "k8sjobs"


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes().start()
    yield server
    server.close()


def _start(
    processes: Processes, http: httpx.Client, fake: FakeKubernetes, tmp_path: Path
) -> tuple[BlockingApi, ManagedProcess]:
    _, url = processes.api()
    api = BlockingApi(http, url)
    api.register(SCHEDULER, runtime="kubernetes")
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    worker = processes.start(
        "worker",
        "worker",
        "--scheduler",
        SCHEDULER,
        "--option",
        f"kubeconfig={kubeconfig}",
        "--option",
        "images=busybox:*",
    )
    worker.wait_for_event("consumer.subscribed")
    return api, worker


def test_a_worker_runs_a_task_as_a_job_and_records_its_log_and_refuses_images_off_its_list(
    processes: Processes, http: httpx.Client, fake: FakeKubernetes, tmp_path: Path
) -> None:
    fake.scripts["busybox:ok"] = Script("succeed", log="hello from the pod\n")
    api, _ = _start(processes, http, fake, tmp_path)

    done = api.schedule(SCHEDULER, {"image": "busybox:ok", "command": ["echo", "hello from the pod"]})
    refused = api.schedule(SCHEDULER, {"image": "evil/miner:latest"})

    finished = api.wait_for_state(done["id"])
    assert finished["state"] == "complete", finished
    assert finished["result"]["log"] == "hello from the pod\n"
    assert fake.created[0]["spec"]["backoffLimit"] == 0
    failed = api.wait_for_state(refused["id"])
    assert failed["state"] == "failed"
    assert "not on this scheduler's image allow-list" in failed["error"]
    assert len(fake.created) == 1


def test_aborting_a_running_task_deletes_its_job_and_pod(
    processes: Processes, http: httpx.Client, fake: FakeKubernetes, tmp_path: Path
) -> None:
    api, worker = _start(processes, http, fake, tmp_path)
    task = api.schedule(SCHEDULER, {"image": "busybox:forever"})
    job = eventually_sync(
        lambda: next(iter(fake.job_names()), None), what="the worker to create the task's Job"
    )
    assert job is not None
    assert fake.pods_of("default", job)

    response = http.post(f"{api.url}/task/{task['id']}/abort")

    assert response.status_code == 200, response.text
    eventually_sync(lambda: fake.job("default", job) is None, what="the Job to be deleted")
    assert ("default", job, "Foreground") in fake.deletions
    assert fake.pods_of("default", job) == []
    assert api.task(task["id"])["state"] == "aborted"
    assert worker.wait_for_event("task.cancelled")["task_id"] == task["id"]


def test_a_worker_with_an_unknown_kubernetes_option_exits_naming_it(
    processes: Processes, http: httpx.Client
) -> None:
    _, url = processes.api()
    BlockingApi(http, url).register(SCHEDULER, runtime="kubernetes")

    worker = processes.start("worker", "worker", "--scheduler", SCHEDULER, "--option", "imagez=busybox:*")

    assert worker.wait() != 0
    stderr = " ".join(worker.stderr().split())
    assert "imagez" in stderr, stderr
    assert "Known options" in stderr, stderr
    assert not worker.events("consumer.subscribed")
