"""Every Job manifest the kubernetes runtime builds is valid against the client's models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from kubernetes.aio.client import ApiClient, V1Job

from taskbroker.models import Task, TaskState
from taskbroker.runtimes.base import TaskFailed
from taskbroker.runtimes.kubernetes.manifest import build_job
from taskbroker.runtimes.kubernetes.options import JobAttributes, KubernetesOptions

NOW = datetime(2026, 1, 1, tzinfo=UTC)

ATTRIBUTE_SETS: list[dict[str, Any]] = [
    {"image": "busybox:1.36"},
    {"image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]},
    {
        "image": "registry.example/tools/build@sha256:" + "a" * 64,
        "command": ["make", "-j4"],
        "env": {"CC": "clang", "MAKEFLAGS": "-s", "_X.y-z": ""},
        "resources": {
            "requests": {"cpu": "250m", "memory": "1Gi"},
            "limits": {"cpu": 2, "nvidia.com/gpu": "1"},
        },
        "namespace": "team-a",
    },
]
OPTION_SETS: list[KubernetesOptions] = [
    KubernetesOptions(),
    KubernetesOptions(namespaces=("team-a",), service_account="runner", ttl_after_finished=0),
]


def _task(attributes: dict[str, Any], *, timeout: timedelta = timedelta(minutes=30)) -> Task:
    return Task(
        id=uuid.uuid4(),
        scheduler="builds",
        attributes=attributes,
        timeout=NOW + timeout,
        state=TaskState.RUNNING,
        created_at=NOW,
        attempts=3,
    )


def _serialised(job: V1Job) -> dict[str, Any]:
    body: dict[str, Any] = ApiClient().sanitize_for_serialization(job)  # type: ignore[no-untyped-call]
    return body


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("attributes", ATTRIBUTE_SETS)
def test_every_generated_manifest_round_trips_through_the_client_models(
    attributes: dict[str, Any], options: KubernetesOptions
) -> None:
    task = _task(attributes)
    job = build_job(
        task,
        JobAttributes.model_validate(attributes),
        options,
        namespace=attributes.get("namespace", options.namespace),
        scheduler="builds",
        consumer="tb-host-1-abc",
        now=NOW,
    )
    sent = _serialised(job)

    parsed = V1Job.model_validate(sent)  # strict: an unknown or misplaced field is an error

    assert parsed is not None
    assert _serialised(parsed) == sent
    assert sent["spec"]["backoffLimit"] == 0
    assert sent["spec"]["activeDeadlineSeconds"] == 1800
    assert sent["spec"]["ttlSecondsAfterFinished"] == options.ttl_after_finished
    assert "backoffLimit" not in sent["spec"]["template"]["spec"]
    assert sent["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert sent["metadata"]["name"] == f"tb-{task.id}-3"


def test_the_client_models_refuse_backoff_limit_under_the_pod_spec() -> None:
    """The KernelCI mistake cannot be written: the pod spec has no such field."""
    task = _task({"image": "busybox:1.36"})
    body = _serialised(
        build_job(
            task,
            JobAttributes(image="busybox:1.36"),
            KubernetesOptions(),
            namespace="default",
            scheduler="builds",
            consumer="c",
            now=NOW,
        )
    )
    body["spec"]["template"]["spec"]["backoffLimit"] = 0

    with pytest.raises(pydantic.ValidationError, match="backoffLimit"):
        V1Job.model_validate(body)


def test_a_task_whose_timeout_has_passed_gets_no_job() -> None:
    task = _task({"image": "busybox:1.36"}, timeout=timedelta(seconds=-1))

    with pytest.raises(TaskFailed, match=r"timeout .* has passed"):
        build_job(
            task,
            JobAttributes(image="busybox:1.36"),
            KubernetesOptions(),
            namespace="default",
            scheduler="builds",
            consumer="c",
            now=NOW,
        )


@pytest.mark.parametrize(
    ("options", "allowed", "refused"),
    [
        ({}, [], ["busybox:1.36"]),
        (
            {"images": "busybox:*, registry.example/tools/*"},
            ["busybox:1.36", "registry.example/tools/x:1"],
            ["busybox", "registry.example/other/x:1", "evil/busybox:1"],
        ),
    ],
)
def test_images_are_allowed_only_by_the_configured_patterns(
    options: dict[str, str], allowed: list[str], refused: list[str]
) -> None:
    configured = KubernetesOptions.from_worker_options(options)

    assert all(configured.image_allowed(image) for image in allowed)
    assert not any(configured.image_allowed(image) for image in refused)
