"""The kubernetes runtime against the fake API server (tests/support/fake_kubernetes.py): Jobs
created, watched, cancelled, adopted and cleaned up over real HTTP with the real JSON shapes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio.client import ApiClient

from taskbroker.models import Task, TaskState, utcnow
from taskbroker.runtimes.base import RuntimeConfig, RuntimeConfigError, TaskCancelled, TaskFailed
from taskbroker.runtimes.kubernetes import KubernetesRuntime
from taskbroker.runtimes.kubernetes.manifest import CONSUMER, build_job, job_labels, job_name
from taskbroker.runtimes.kubernetes.options import JobAttributes, KubernetesOptions
from tests.support.fake_kubernetes import FakeKubernetes, Script
from tests.support.processes import free_port
from tests.support.waiting import eventually

SCHEDULER = "k8s"


def _task(attributes: dict[str, Any], *, attempts: int = 1, task_id: uuid.UUID | None = None) -> Task:
    now = utcnow()
    return Task(
        id=task_id or uuid.uuid4(),
        scheduler=SCHEDULER,
        attributes=attributes,
        timeout=now + timedelta(hours=1),
        state=TaskState.RUNNING,
        created_at=now,
        attempts=attempts,
    )


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes().start()
    yield server
    server.close()


def _runtime(kubeconfig: Path, **options: str) -> KubernetesRuntime:
    settings = {
        "kubeconfig": str(kubeconfig),
        "images": "busybox:*,registry.example/tools/*",
        "namespaces": "team-a",
        **options,
    }
    return KubernetesRuntime(RuntimeConfig(scheduler=SCHEDULER, concurrency=4, options=settings))


@pytest.fixture
def kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def runtime(kubeconfig: Path) -> AsyncIterator[KubernetesRuntime]:
    built = _runtime(kubeconfig, ttl_after_finished="120", service_account="runner")
    await built.start()
    yield built
    await built.close()


async def _job_appears(fake: FakeKubernetes, task: Task, namespace: str = "default") -> dict[str, Any]:
    async def created() -> dict[str, Any] | None:
        return fake.job(namespace, job_name(task))

    found = await eventually(created, what="the Job to be created")
    assert found is not None
    return found


async def test_a_succeeded_job_completes_the_task_with_the_tail_of_its_pod_log(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.scripts["busybox:ok"] = Script("succeed", log="".join(f"line {i}\n" for i in range(150)))
    task = _task({"image": "busybox:ok", "command": ["sh", "-c", "seq 150"]})

    result = await runtime.run(task)

    assert result["job"] == job_name(task)
    assert result["namespace"] == "default"
    lines = result["log"].splitlines()
    assert lines[0] == "line 50"
    assert lines[-1] == "line 149"
    assert len(lines) == 100


async def test_the_job_manifest_sets_backoff_limit_on_the_job_spec_deadline_ttl_and_labels(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.scripts["busybox:ok"] = Script("succeed")
    task = _task(
        {
            "image": "busybox:ok",
            "command": ["true"],
            "env": {"MODE": "fast"},
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi", "cpu": 1}},
        }
    )

    await runtime.run(task)

    [sent] = fake.created
    spec = sent["spec"]
    assert spec["backoffLimit"] == 0
    assert "backoffLimit" not in spec["template"]["spec"]
    assert 3500 < spec["activeDeadlineSeconds"] <= 3600
    assert spec["ttlSecondsAfterFinished"] == 120
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "runner"
    [container] = pod["containers"]
    assert container["image"] == "busybox:ok"
    assert container["command"] == ["true"]
    assert container["env"] == [{"name": "MODE", "value": "fast"}]
    assert container["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi", "cpu": "1"}}
    labels = sent["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "taskbroker"
    assert labels["taskbroker.io/task-id"] == str(task.id)
    assert labels["taskbroker.io/attempt"] == "1"
    assert labels["taskbroker.io/scheduler"] == SCHEDULER
    assert labels[CONSUMER] == runtime.identity
    assert spec["template"]["metadata"]["labels"] == labels


async def test_a_failed_job_fails_the_task_with_its_reason_and_log_tail(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.scripts["busybox:broken"] = Script("fail", log="starting\nerror: disk full\n")

    with pytest.raises(TaskFailed) as failure:
        await runtime.run(_task({"image": "busybox:broken"}))

    message = str(failure.value)
    assert "BackoffLimitExceeded" in message
    assert "error: disk full" in message


async def test_a_job_past_its_deadline_fails_the_task_saying_so(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.scripts["busybox:slow"] = Script("deadline", log="still working\n")

    with pytest.raises(TaskFailed, match=r"exceeded its deadline of \d+ s \(the task's timeout\)"):
        await runtime.run(_task({"image": "busybox:slow"}))


async def test_the_watch_reports_a_job_that_finishes_later_even_after_its_resource_version_expired(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.expire_next_watch = True
    task = _task({"image": "busybox:later"})
    running = asyncio.create_task(runtime.run(task))
    await _job_appears(fake, task)
    await eventually(
        lambda: asyncio.sleep(0, not fake.expire_next_watch), what="the runtime to meet the 410 Gone"
    )

    fake.finish("default", job_name(task), "succeed", log="done\n")

    result = await running
    assert result["log"] == "done\n"


async def test_cancel_deletes_the_job_with_foreground_propagation_and_run_raises_task_cancelled(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    task = _task({"image": "busybox:forever"})
    running = asyncio.create_task(runtime.run(task))
    await _job_appears(fake, task)
    assert fake.pods_of("default", job_name(task))

    await runtime.cancel(task)

    with pytest.raises(TaskCancelled):
        await running
    await runtime.wait_stopped(task)
    assert fake.deletions == [("default", job_name(task), "Foreground")]
    assert fake.job("default", job_name(task)) is None
    assert fake.pods_of("default", job_name(task)) == []


async def test_cancel_of_a_run_that_is_not_live_is_a_no_op(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    await runtime.cancel(_task({"image": "busybox:ok"}))

    assert fake.deletions == []


async def test_an_image_off_the_allow_list_fails_and_creates_no_job(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    with pytest.raises(TaskFailed, match=r"'evil/miner:latest' is not on this scheduler's image allow-list"):
        await runtime.run(_task({"image": "evil/miner:latest"}))

    assert fake.created == []


async def test_no_image_is_allowed_until_the_worker_names_some(
    fake: FakeKubernetes, kubeconfig: Path
) -> None:
    runtime = KubernetesRuntime(
        RuntimeConfig(scheduler=SCHEDULER, concurrency=1, options={"kubeconfig": str(kubeconfig)})
    )
    try:
        with pytest.raises(TaskFailed, match=r"--option images="):
            await runtime.run(_task({"image": "busybox:ok"}))
    finally:
        await runtime.close()

    assert fake.created == []


async def test_a_namespace_outside_the_allowed_set_fails_and_creates_no_job(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    with pytest.raises(TaskFailed, match=r"namespace 'kube-system' is not allowed"):
        await runtime.run(_task({"image": "busybox:ok", "namespace": "kube-system"}))

    assert fake.created == []


async def test_an_allowed_namespace_named_by_the_task_is_where_the_job_runs(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.scripts["busybox:ok"] = Script("succeed")

    result = await runtime.run(_task({"image": "busybox:ok", "namespace": "team-a"}))

    assert result["namespace"] == "team-a"
    assert fake.created[0]["metadata"]["namespace"] == "team-a"


@pytest.mark.parametrize(
    ("attributes", "complaint"),
    [
        ({"command": ["true"]}, "image"),
        ({"image": "busybox:ok", "args": ["x"]}, "args"),
        ({"image": "busybox:ok", "env": {"BAD NAME": "x"}}, "env"),
        ({"image": "busybox:ok", "resources": {"limits": {"memory": "lots"}}}, "not a Kubernetes quantity"),
        ({"image": "busybox:ok", "command": "echo hi"}, "command"),
    ],
)
async def test_invalid_attributes_fail_the_task_clearly_and_create_no_job(
    fake: FakeKubernetes, runtime: KubernetesRuntime, attributes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(TaskFailed, match="invalid attributes for the kubernetes runtime") as failure:
        await runtime.run(_task(attributes))

    assert complaint in str(failure.value)
    assert fake.created == []


async def test_an_unreachable_api_fails_the_attempt_at_once(tmp_path: Path) -> None:
    closed = FakeKubernetes()
    kubeconfig = closed.write_kubeconfig(tmp_path / "kubeconfig")
    closed.close()
    kubeconfig.write_text(kubeconfig.read_text().replace(closed.url, f"http://127.0.0.1:{free_port()}"))
    runtime = _runtime(kubeconfig)
    await runtime.start()  # logs, never raises: the consumer must still start
    try:
        with pytest.raises(TaskFailed, match=r"the Kubernetes API at http://127\.0\.0\.1:\d+ is unreachable"):
            await runtime.run(_task({"image": "busybox:ok"}))
    finally:
        await runtime.close()


async def test_a_missing_kubeconfig_fails_the_attempt_naming_it(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path / "nowhere")
    try:
        with pytest.raises(TaskFailed, match=r"cannot configure the Kubernetes client from the kubeconfig"):
            await runtime.run(_task({"image": "busybox:ok"}))
    finally:
        await runtime.close()


async def test_a_forbidden_create_fails_the_attempt_with_the_api_message(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    fake.refuse_create = 403

    with pytest.raises(TaskFailed, match=r"refused to create Job default/tb-.*: 403 .*forbidden"):
        await runtime.run(_task({"image": "busybox:ok"}))


def _left_behind(task: Task, consumer: str, namespace: str = "default") -> dict[str, Any]:
    """The JSON of the Job a (now dead) consumer created for ``task``."""
    job = build_job(
        task,
        JobAttributes.model_validate(task.attributes),
        KubernetesOptions(namespaces=("team-a",)),
        namespace=namespace,
        scheduler=SCHEDULER,
        consumer=consumer,
        now=datetime.now(UTC),
    )
    body: dict[str, Any] = ApiClient().sanitize_for_serialization(job)  # type: ignore[no-untyped-call]
    return body


async def test_a_repeated_attempt_adopts_the_job_already_running_for_it(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    task = _task({"image": "busybox:ok"})
    fake.add_job(_left_behind(task, "tb-gone-1-abc"))

    running = asyncio.create_task(runtime.run(task))
    await eventually(
        lambda: asyncio.sleep(
            0, (fake.job("default", job_name(task)) or {})["metadata"]["labels"][CONSUMER] == runtime.identity
        ),
        what="the adopted Job to be relabelled with its new consumer",
    )
    fake.finish("default", job_name(task), "succeed", log="adopted\n")

    assert (await running)["log"] == "adopted\n"
    assert len(fake.created) == 1  # the one create, answered 409
    assert fake.job_names() == [job_name(task)]


async def test_a_new_attempt_deletes_the_job_of_the_earlier_attempt_first(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    first = _task({"image": "busybox:ok"}, attempts=1)
    fake.add_job(_left_behind(first, runtime.identity))
    second = _task({"image": "busybox:ok"}, attempts=2, task_id=first.id)
    fake.scripts["busybox:ok"] = Script("succeed")

    await runtime.run(second)

    assert fake.deletions[0] == ("default", job_name(first), "Foreground")
    assert fake.job_names() == [job_name(second)]


async def test_cancel_interrupts_a_run_still_waiting_for_an_earlier_attempts_job_to_go(
    fake: FakeKubernetes, runtime: KubernetesRuntime
) -> None:
    first = _task({"image": "busybox:ok"}, attempts=1)
    fake.add_job(_left_behind(first, runtime.identity))
    fake.stuck.add(job_name(first))
    second = _task({"image": "busybox:ok"}, attempts=2, task_id=first.id)
    running = asyncio.create_task(runtime.run(second))

    async def old_job_deleted() -> bool:
        return any(name == job_name(first) for _, name, _ in fake.deletions)

    await eventually(old_job_deleted, what="the earlier attempt's Job to be deleted")

    await runtime.cancel(second)

    with pytest.raises(TaskCancelled):
        await running
    await runtime.wait_stopped(second)
    assert fake.job("default", job_name(second)) is None
    assert [sent["metadata"]["name"] for sent in fake.created] == []


async def test_start_deletes_unfinished_jobs_of_dead_consumers_and_spares_live_and_finished_ones(
    fake: FakeKubernetes, kubeconfig: Path
) -> None:
    orphan = _task({"image": "busybox:ok"})
    elsewhere = _task({"image": "busybox:ok", "namespace": "team-a"})
    peers = _task({"image": "busybox:ok"})
    finished = _task({"image": "busybox:ok"})
    fake.add_job(_left_behind(orphan, "tb-dead-1-aaa"))
    fake.add_job(_left_behind(elsewhere, "tb-dead-1-aaa", namespace="team-a"))
    fake.add_job(_left_behind(peers, "tb-live-2-bbb"))
    fake.add_job(_left_behind(finished, "tb-dead-1-aaa"), outcome="succeed")
    labels = {"app.kubernetes.io/managed-by": "taskbroker", "taskbroker.io/scheduler": SCHEDULER}
    fake.add_lease("default", "tb-live-2-bbb", labels=labels, renewed=datetime.now(UTC), seconds=60)
    fake.add_lease(
        "default",
        "tb-dead-1-aaa",
        labels=labels,
        renewed=datetime.now(UTC) - timedelta(minutes=5),
        seconds=60,
    )

    runtime = _runtime(kubeconfig)
    await runtime.start()
    try:
        assert fake.job_names("default") == sorted([job_name(peers), job_name(finished)])
        assert fake.job_names("team-a") == []
        assert ("default", "tb-dead-1-aaa") not in fake.leases
        assert ("default", runtime.identity) in fake.leases
    finally:
        await runtime.close()
    assert ("default", runtime.identity) not in fake.leases


def test_an_unknown_worker_option_refuses_to_build_the_runtime_naming_the_known_ones() -> None:
    with pytest.raises(RuntimeConfigError, match=r"imagez.*Known options: .*images"):
        KubernetesRuntime(RuntimeConfig(scheduler=SCHEDULER, concurrency=1, options={"imagez": "x"}))


def test_job_labels_fit_kubernetes_label_rules() -> None:
    labels = job_labels(_task({}), scheduler="a-scheduler.", consumer="x" * 80)

    assert labels["taskbroker.io/scheduler"] == "a-scheduler"
    assert len(labels[CONSUMER]) == 63
