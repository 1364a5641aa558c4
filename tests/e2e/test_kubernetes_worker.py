"""A real `taskbroker worker` for a `kubernetes` scheduler, on the real Redis and RabbitMQ, running
tasks as Jobs on the fake Kubernetes API server this test process serves."""

from __future__ import annotations

import signal
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
    processes: Processes,
    http: httpx.Client,
    fake: FakeKubernetes,
    tmp_path: Path,
    *,
    api: BlockingApi | None = None,
    name: str = "worker",
    env: dict[str, str] | None = None,
) -> tuple[BlockingApi, ManagedProcess]:
    """The API (unless given) with the scheduler registered, and a worker subscribed to it."""
    if api is None:
        _, url = processes.api()
        api = BlockingApi(http, url)
        api.register(SCHEDULER, runtime="kubernetes")
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    worker = processes.start(
        name,
        "worker",
        "--scheduler",
        SCHEDULER,
        "--option",
        f"kubeconfig={kubeconfig}",
        "--option",
        "images=busybox:*",
        env=env,
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


def _first_job(fake: FakeKubernetes) -> str:
    job = eventually_sync(lambda: next(iter(fake.job_names()), None), what="a Job to be created")
    assert job is not None
    return job


def test_a_worker_stopped_mid_task_deletes_the_job_and_the_next_worker_runs_the_task_again(
    processes: Processes, http: httpx.Client, fake: FakeKubernetes, tmp_path: Path
) -> None:
    api, first = _start(processes, http, fake, tmp_path, env={"TASKBROKER_SHUTDOWN_GRACE": "0.5"})
    task = api.schedule(SCHEDULER, {"image": "busybox:forever"})
    job = _first_job(fake)

    first.send(signal.SIGTERM)

    assert first.wait() == 0
    assert ("default", job, "Foreground") in fake.deletions
    assert fake.job_names() == []
    assert fake.leases == {}  # the stopped consumer gave its Lease up
    _start(processes, http, fake, tmp_path, api=api, name="worker-2")
    rerun = _first_job(fake)
    fake.finish("default", rerun, "succeed", log="second time lucky\n")
    assert api.wait_for_state(task["id"])["result"]["log"] == "second time lucky\n"


def test_when_a_worker_dies_the_rerun_deletes_its_job_before_starting_a_new_one(
    processes: Processes, http: httpx.Client, fake: FakeKubernetes, tmp_path: Path
) -> None:
    api, first = _start(processes, http, fake, tmp_path)
    processes.timeout_daemon()
    task = api.schedule(SCHEDULER, {"image": "busybox:forever"})
    old = _first_job(fake)

    first.kill()
    _start(processes, http, fake, tmp_path, api=api, name="worker-2")

    new = eventually_sync(
        lambda: next((name for name in fake.job_names() if name != old), None),
        what="the re-run's Job",
    )
    assert new is not None
    assert ("default", old, "Foreground") in fake.deletions
    assert fake.job_names() == [new]
    fake.finish("default", new, "succeed")
    assert api.wait_for_state(task["id"])["state"] == "complete"
