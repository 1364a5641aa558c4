"""Build the Job of one task attempt from the client's models, so the real schema checks it.

Building with ``V1Job``/``V1JobSpec``/... rather than dicts means a field in the wrong place
cannot be written at all (``V1PodSpec`` has no ``backoff_limit``): KernelCI's template once put
``backoffLimit`` under the pod spec, where Kubernetes silently ignores it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from kubernetes.aio.client import (
    V1Container,
    V1EnvVar,
    V1Job,
    V1JobSpec,
    V1ObjectMeta,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ResourceRequirements,
)

from taskbroker.models import Task
from taskbroker.runtimes.base import TaskFailed
from taskbroker.runtimes.kubernetes.options import JobAttributes, KubernetesOptions

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "taskbroker"
TASK_ID = "taskbroker.io/task-id"
ATTEMPT = "taskbroker.io/attempt"
SCHEDULER = "taskbroker.io/scheduler"
CONSUMER = "taskbroker.io/consumer"
CONTAINER = "task"


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def job_name(task: Task) -> str:
    """Named after the task and attempt, so a repeated create of the same attempt is a 409 to adopt."""
    return f"tb-{task.id}-{task.attempts}"


def scheduler_selector(scheduler: str) -> str:
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{SCHEDULER}={label_value(scheduler)}"


def task_selector(task: Task) -> str:
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{TASK_ID}={task.id}"


def job_labels(task: Task, *, scheduler: str, consumer: str) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        TASK_ID: str(task.id),
        ATTEMPT: str(task.attempts),
        SCHEDULER: label_value(scheduler),
        CONSUMER: label_value(consumer),
    }


def seconds_left(task: Task, now: datetime) -> int:
    """The task's remaining time as ``activeDeadlineSeconds``; TaskFailed if none is left."""
    left = math.ceil((task.timeout - now).total_seconds())
    if left <= 0:
        raise TaskFailed(f"the task's timeout ({task.timeout.isoformat()}) has passed: no Job was created")
    return left


def build_job(
    task: Task,
    attributes: JobAttributes,
    options: KubernetesOptions,
    *,
    namespace: str,
    scheduler: str,
    consumer: str,
    now: datetime,
) -> V1Job:
    labels = job_labels(task, scheduler=scheduler, consumer=consumer)
    resources = None
    if attributes.resources is not None:
        resources = V1ResourceRequirements(
            requests=attributes.resources.requests or None, limits=attributes.resources.limits or None
        )
    container = V1Container(
        name=CONTAINER,
        image=attributes.image,
        command=attributes.command,
        env=[V1EnvVar(name=k, value=v) for k, v in attributes.env.items()] or None,
        resources=resources,
    )
    return V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(name=job_name(task), namespace=namespace, labels=labels),
        spec=V1JobSpec(
            # The broker owns retries: Kubernetes must never start a second pod for this attempt.
            backoff_limit=0,
            active_deadline_seconds=seconds_left(task, now),
            ttl_seconds_after_finished=options.ttl_after_finished,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels),
                spec=V1PodSpec(
                    restart_policy="Never",
                    service_account_name=options.service_account,
                    containers=[container],
                ),
            ),
        ),
    )
