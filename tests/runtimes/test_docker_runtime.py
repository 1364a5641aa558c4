"""The Docker runtime against the real engine (podman's Docker-compatible API) and the real Redis."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from taskbroker.backends import Backends
from taskbroker.models import SchedulerDefinition, Task, TaskState, utcnow
from taskbroker.runtimes.base import RuntimeConfig, TaskCancelled, TaskFailed
from taskbroker.runtimes.docker import (
    CONSUMER_LABEL,
    MARKER_LABEL,
    SCHEDULER_LABEL,
    TASK_LABEL,
    DockerRuntime,
    container_name,
)
from taskbroker.runtimes.docker_engine import DockerEngine
from taskbroker.store import NewTask
from tests.support.container_engine import TEST_IMAGE
from tests.support.waiting import eventually

RuntimeFactory = Callable[..., DockerRuntime]


def _task(scheduler: str, attributes: dict[str, Any], *, attempts: int = 1) -> Task:
    now = utcnow()
    return Task(
        id=uuid.uuid4(),
        scheduler=scheduler,
        attributes=attributes,
        timeout=now + timedelta(hours=1),
        state=TaskState.RUNNING,
        created_at=now,
        attempts=attempts,
    )


def _busybox(*command: str, **extra: Any) -> dict[str, Any]:
    return {"image": TEST_IMAGE, "command": list(command), **extra}


@pytest.fixture
async def make_runtime(docker_host: str, docker_scheduler: str) -> AsyncIterator[RuntimeFactory]:
    """Builds started runtimes for the test's scheduler (busybox allowed, never pulled); closes them."""
    built: list[DockerRuntime] = []

    def make(**overrides: Any) -> DockerRuntime:
        options = {"images": "localhost/busybox:*", "pull": "never", "docker_host": docker_host}
        options.update(overrides.pop("options", {}))
        config = RuntimeConfig(
            scheduler=docker_scheduler,
            concurrency=2,
            options=options,
            consumer_id=overrides.pop("consumer_id", f"test-consumer-{uuid.uuid4().hex[:6]}"),
            **overrides,
        )
        runtime = DockerRuntime(config)
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        await runtime.close()


async def _containers_of(engine: DockerEngine, task: Task) -> list[str]:
    return [c.name for c in await engine.list_containers({TASK_LABEL: str(task.id)})]


async def test_a_container_that_exits_zero_completes_with_its_exit_code_and_output(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("sh", "-c", "echo hello from the container; echo to stderr >&2"))

    result = await runtime.run(task)

    assert result["exit_code"] == 0
    assert "hello from the container" in result["logs"]
    assert "to stderr" in result["logs"]
    assert await _containers_of(engine, task) == [], "the container is removed after the run"


async def test_a_non_zero_exit_fails_the_task_with_the_exit_code_and_the_output_tail(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("sh", "-c", "echo something broke; exit 3"))

    with pytest.raises(TaskFailed, match="exited with code 3") as failure:
        await runtime.run(task)

    assert "something broke" in str(failure.value)
    assert await _containers_of(engine, task) == []


async def test_env_and_workdir_reach_the_container(
    make_runtime: RuntimeFactory, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(
        docker_scheduler,
        _busybox("sh", "-c", 'echo "greeting=$GREETING"; pwd', env={"GREETING": "hi there"}, workdir="/tmp"),
    )

    result = await runtime.run(task)

    assert result["logs"].splitlines() == ["greeting=hi there", "/tmp"]


async def test_only_the_configured_tail_of_the_output_is_kept(
    make_runtime: RuntimeFactory, docker_scheduler: str
) -> None:
    runtime = make_runtime(options={"log_tail_lines": "3"})
    script = "i=1; while [ $i -le 50 ]; do echo line-$i; i=$((i+1)); done"

    result = await runtime.run(_task(docker_scheduler, _busybox("sh", "-c", script)))

    assert result["logs"].splitlines() == ["line-48", "line-49", "line-50"]


async def test_the_container_carries_the_task_attempt_scheduler_and_consumer_labels(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime(consumer_id="labelled-consumer")
    task = _task(docker_scheduler, _busybox("sleep", "300", labels={"team": "reports"}), attempts=2)
    run = asyncio.ensure_future(runtime.run(task))
    try:
        [container] = await eventually(
            lambda: engine.list_containers({TASK_LABEL: str(task.id)}), what="the task's container"
        )
        assert container.name == container_name(task) == f"taskbroker-{task.id}-2"
        assert container.labels["team"] == "reports"
        assert container.labels[MARKER_LABEL] == "1"
        assert container.labels["io.taskbroker.attempt"] == "2"
        assert container.labels[SCHEDULER_LABEL] == docker_scheduler
        assert container.labels[CONSUMER_LABEL] == "labelled-consumer"
    finally:
        await runtime.cancel(task)
        with pytest.raises(TaskCancelled):
            await run


async def test_cancel_kills_a_running_container_and_removes_it(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("sleep", "300"))
    run = asyncio.ensure_future(runtime.run(task))

    async def running() -> bool:
        found = await engine.list_containers({TASK_LABEL: str(task.id)})
        return bool(found) and found[0].state == "running"

    await eventually(running, what="the container to run")
    await runtime.cancel(task)

    with pytest.raises(TaskCancelled):
        await run
    await runtime.wait_stopped(task)
    assert await _containers_of(engine, task) == []


async def test_wait_stopped_returns_only_once_the_container_of_an_abandoned_run_is_gone(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    """At shutdown the consumer may give up on a stuck run (asyncio-cancel it) before handing the
    task back: the container must still be removed first, so the next attempt never overlaps."""
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("sleep", "300"))
    run = asyncio.ensure_future(runtime.run(task))
    await eventually(lambda: _containers_of(engine, task), what="the container to exist")

    run.cancel()
    await runtime.wait_stopped(task)

    assert await _containers_of(engine, task) == []
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_cancel_before_the_container_starts_never_leaves_one_running(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("sleep", "300"))
    run = asyncio.ensure_future(runtime.run(task))
    await asyncio.sleep(0)  # let run() register the attempt, then cancel before any engine call ends

    await runtime.cancel(task)

    with pytest.raises(TaskCancelled):
        await run
    assert await _containers_of(engine, task) == []


async def test_an_image_off_the_allow_list_fails_the_task_and_creates_no_container(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime(options={"images": "registry.example/approved/*,localhost/other:*"})
    task = _task(docker_scheduler, _busybox("echo", "never"))

    with pytest.raises(TaskFailed) as failure:
        await runtime.run(task)

    assert str(failure.value) == (
        f"image {TEST_IMAGE} is not allowed on scheduler {docker_scheduler}; "
        "allowed: registry.example/approved/*, localhost/other:*"
    )
    assert await _containers_of(engine, task) == []


async def test_no_image_is_allowed_until_the_operator_configures_images(
    docker_host: str, docker_scheduler: str
) -> None:
    runtime = DockerRuntime(RuntimeConfig(scheduler=docker_scheduler, concurrency=1, options={}))
    try:
        with pytest.raises(TaskFailed, match=r"is not allowed on scheduler .*; allowed: none"):
            await runtime.run(_task(docker_scheduler, _busybox("echo", "hi")))
    finally:
        await runtime.close()


async def test_a_missing_image_with_pull_never_fails_clearly(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime(options={"images": "localhost/*"})
    task = _task(docker_scheduler, {"image": "localhost/not-loaded-here:1"})

    with pytest.raises(TaskFailed, match=r"is not present on the container engine .* pull policy is never"):
        await runtime.run(task)
    assert await _containers_of(engine, task) == []


async def test_an_image_that_cannot_be_pulled_fails_the_attempt_at_once(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime(options={"images": "127.0.0.1:9/*", "pull": "missing"})
    task = _task(docker_scheduler, {"image": "127.0.0.1:9/nowhere:1"})

    with pytest.raises(TaskFailed, match=re.escape("pull 127.0.0.1:9/nowhere:1")):
        await runtime.run(task)
    assert await _containers_of(engine, task) == []


async def test_an_unreachable_engine_fails_each_task_clearly_and_the_runtime_keeps_working(
    make_runtime: RuntimeFactory, docker_scheduler: str, tmp_path: Any
) -> None:
    nobody = tmp_path / "nobody-listens.sock"
    runtime = make_runtime(options={"docker_host": f"unix://{nobody}"})

    await runtime.start()  # logs that adoption was skipped; does not raise
    for _ in range(2):
        with pytest.raises(
            TaskFailed, match=r"container engine at unix://.*nobody-listens.sock is unreachable"
        ):
            await runtime.run(_task(docker_scheduler, _busybox("echo", "hi")))


async def test_a_repeated_attempt_replaces_the_container_a_dead_run_left_under_its_name(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    runtime = make_runtime()
    task = _task(docker_scheduler, _busybox("echo", "second try"))
    await engine.create(
        container_name(task),
        {"Image": TEST_IMAGE, "Cmd": ["sleep", "300"], "Labels": {SCHEDULER_LABEL: docker_scheduler}},
    )

    result = await runtime.run(task)

    assert result == {"exit_code": 0, "logs": "second try\n"}
    assert not await engine.exists(container_name(task))


async def _leftover(engine: DockerEngine, scheduler: str, task_id: str, consumer: str) -> str:
    """A running container as a consumer of ``scheduler`` would have left it."""
    name = f"taskbroker-{task_id}-1"
    await engine.create(
        name,
        {
            "Image": TEST_IMAGE,
            "Cmd": ["sleep", "300"],
            "Labels": {
                MARKER_LABEL: "1",
                TASK_LABEL: task_id,
                "io.taskbroker.attempt": "1",
                SCHEDULER_LABEL: scheduler,
                CONSUMER_LABEL: consumer,
            },
        },
    )
    await engine.start(name)
    return name


async def test_start_removes_a_dead_consumers_containers_and_keeps_a_live_replicas(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str, real: Backends
) -> None:
    live_task, dead_task = uuid.uuid4(), uuid.uuid4()
    await real.store.register_scheduler(SchedulerDefinition(name=docker_scheduler, runtime="docker"))
    await real.store.create(
        [
            NewTask(
                id=task_id, scheduler=docker_scheduler, attributes={}, timeout=utcnow() + timedelta(hours=1)
            )
            for task_id in (live_task, dead_task)
        ],
        now=utcnow(),
    )
    await real.store.claim(str(live_task), consumer="live-replica", lease=300, max_attempts=5)
    # The dead consumer's task was taken over by another consumer once its lease lapsed.
    await real.store.claim(str(dead_task), consumer="successor", lease=300, max_attempts=5)
    live = await _leftover(engine, docker_scheduler, str(live_task), "live-replica")
    orphan = await _leftover(engine, docker_scheduler, str(dead_task), "dead-consumer")
    never_claimed = await _leftover(engine, docker_scheduler, str(uuid.uuid4()), "dead-consumer")

    runtime = make_runtime(lease_holder=real.store.lease_holder)
    await runtime.start()

    assert await engine.exists(live), "a live replica's container is left alone"
    assert not await engine.exists(orphan)
    assert not await engine.exists(never_claimed)


async def test_start_without_a_lease_holder_treats_every_container_of_the_scheduler_as_an_orphan(
    make_runtime: RuntimeFactory, engine: DockerEngine, docker_scheduler: str
) -> None:
    orphan = await _leftover(engine, docker_scheduler, str(uuid.uuid4()), "dead-consumer")
    elsewhere = await _leftover(engine, f"{docker_scheduler}-other", str(uuid.uuid4()), "dead-consumer")
    try:
        await make_runtime().start()

        assert not await engine.exists(orphan)
        assert await engine.exists(elsewhere), "another scheduler's containers are not ours"
    finally:
        await engine.remove(elsewhere)
