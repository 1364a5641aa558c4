"""A real `taskbroker worker` for a `docker` scheduler, on the real Redis, RabbitMQ and container
engine (podman's Docker-compatible API): tasks complete, fail, and abort with their container."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from taskbroker.runtimes.docker import TASK_LABEL
from taskbroker.runtimes.docker_engine import DockerEngine
from tests.support.blocking_api import BlockingApi
from tests.support.container_engine import TEST_IMAGE, require_engine
from tests.support.processes import ManagedProcess, Processes
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def docker_host() -> str:
    return require_engine()


@pytest.fixture
def api(processes: Processes, http: httpx.Client) -> BlockingApi:
    _, url = processes.api()
    return BlockingApi(http, url)


def _docker_worker(
    processes: Processes, scheduler: str, docker_host: str, name: str = "worker"
) -> ManagedProcess:
    worker = processes.start(
        name,
        "worker",
        "--scheduler",
        scheduler,
        "--concurrency",
        "2",
        "--option",
        "images=localhost/busybox:*",
        "--option",
        "pull=never",
        "--option",
        f"docker_host={docker_host}",
        "--option",
        "orphan_sweep_interval=1",
    )
    worker.wait_for_event("consumer.subscribed")
    return worker


def _containers_of(docker_host: str, task_id: str) -> list[str]:
    """Names of the task's containers, running or not."""

    async def listing() -> list[str]:
        engine = DockerEngine(docker_host)
        try:
            return [c.name for c in await engine.list_containers({TASK_LABEL: task_id})]
        finally:
            await engine.close()

    return asyncio.run(listing())


def test_a_docker_scheduler_runs_a_container_to_completion_and_keeps_serving_after_a_failure(
    processes: Processes, api: BlockingApi, docker_host: str
) -> None:
    api.register("containers", runtime="docker")
    worker = _docker_worker(processes, "containers", docker_host)

    refused = api.schedule("containers", {"image": "docker.io/library/alpine:3"})
    failed = api.schedule("containers", {"image": TEST_IMAGE, "command": ["sh", "-c", "echo bad; exit 2"]})
    done = api.schedule("containers", {"image": TEST_IMAGE, "command": ["echo", "hello from a container"]})

    refused = api.wait_for_state(refused["id"])
    assert refused["state"] == "failed"
    assert "is not allowed on scheduler containers; allowed: localhost/busybox:*" in refused["error"]
    failed = api.wait_for_state(failed["id"])
    assert failed["state"] == "failed"
    assert "exited with code 2" in failed["error"]
    assert "bad" in failed["error"]
    done = api.wait_for_state(done["id"])
    assert done["state"] == "complete", done
    assert done["result"] == {"exit_code": 0, "logs": "hello from a container\n"}
    assert _containers_of(docker_host, done["id"]) == []
    assert worker.returncode is None


def test_aborting_a_running_docker_task_kills_and_removes_its_container(
    processes: Processes, api: BlockingApi, docker_host: str
) -> None:
    api.register("long-containers", runtime="docker")
    worker = _docker_worker(processes, "long-containers", docker_host)
    task = api.schedule("long-containers", {"image": TEST_IMAGE, "command": ["sleep", "3600"]})
    api.wait_for_state(task["id"], "running")
    eventually_sync(lambda: _containers_of(docker_host, task["id"]), what="the task's container")

    response = api.http.post(f"{api.url}/task/{task['id']}/abort")

    assert response.status_code == 200, response.text
    assert api.wait_for_state(task["id"])["state"] == "aborted"
    eventually_sync(
        lambda: _containers_of(docker_host, task["id"]) == [], what="the aborted task's container to be gone"
    )
    assert worker.returncode is None


def test_the_container_of_a_killed_worker_is_removed_by_its_successor_and_the_task_re_runs(
    processes: Processes, api: BlockingApi, docker_host: str
) -> None:
    api.register("crashing-containers", runtime="docker")
    processes.timeout_daemon()
    first = _docker_worker(processes, "crashing-containers", docker_host, name="first-worker")
    task = api.schedule("crashing-containers", {"image": TEST_IMAGE, "command": ["sleep", "3600"]})
    orphan = f"taskbroker-{task['id']}-1"
    eventually_sync(lambda: _containers_of(docker_host, task["id"]) == [orphan], what="attempt 1's container")

    first.kill()  # SIGKILL: the container runs on, and the lease lapses after TASKBROKER_LEASE
    _docker_worker(processes, "crashing-containers", docker_host, name="second-worker")

    rerun = f"taskbroker-{task['id']}-2"
    eventually_sync(
        lambda: _containers_of(docker_host, task["id"]) == [rerun],
        what="the orphan removed and the task re-run in attempt 2's container",
    )
    api.http.post(f"{api.url}/task/{task['id']}/abort")
    assert api.wait_for_state(task["id"])["state"] == "aborted"
    eventually_sync(lambda: _containers_of(docker_host, task["id"]) == [], what="no container left")


def test_a_worker_with_a_bad_docker_option_exits_naming_it(processes: Processes, api: BlockingApi) -> None:
    api.register("misconfigured", runtime="docker")

    worker = processes.start("worker", "worker", "--scheduler", "misconfigured", "--option", "pull=sometimes")

    assert worker.wait() != 0
    assert "option pull='sometimes': use one of" in " ".join(worker.stderr().split())
    assert not worker.events("consumer.subscribed")
