"""The Kubernetes API calls the runtime makes, with every failure turned into one clear error.

Uses ``kubernetes.aio``, the official client's asyncio twin (shipped with ``kubernetes`` since
v37): a watch that waits hours for a Job is a coroutine, cancelled like any other, instead of a
blocked thread per running task that nothing can interrupt and that would need a pool sized to
the consumer's concurrency.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from kubernetes.aio import config as kube_config
from kubernetes.aio import watch
from kubernetes.aio.client import (
    ApiClient,
    BatchV1Api,
    Configuration,
    CoordinationV1Api,
    CoreV1Api,
    V1DeleteOptions,
    V1Job,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
)
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config.config_exception import ConfigException

from taskbroker.runtimes.base import TaskFailed
from taskbroker.runtimes.kubernetes.manifest import CONTAINER
from taskbroker.runtimes.kubernetes.options import KubernetesOptions

log = structlog.get_logger("taskbroker.runtime.kubernetes")

REQUEST_TIMEOUT = 30.0
WATCH_SECONDS = 240
"""Server-side watch timeout: after it the Job is read afresh and watched again."""
NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class KubernetesUnavailable(TaskFailed):
    """The API could not be reached, refused the call, or the client is misconfigured. The
    attempt fails at once with this message rather than waiting for the task's timeout."""


class JobVanished(Exception):
    """The Job was deleted before it finished (by cancel, or by someone else)."""


@dataclass(frozen=True)
class JobOutcome:
    succeeded: bool
    reason: str
    message: str


def outcome(job: V1Job) -> JobOutcome | None:
    """The final state from the Job's terminal conditions; None while it still runs.

    ``SuccessCriteriaMet`` and ``FailureTarget`` are interim (pods may still be terminating):
    only ``Complete`` and ``Failed`` are final.
    """
    for condition in (job.status.conditions if job.status else None) or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return JobOutcome(
                succeeded=condition.type == "Complete",
                reason=condition.reason or condition.type,
                message=condition.message or "",
            )
    return None


def metadata(obj: Any) -> V1ObjectMeta:
    """The metadata of an object the API returned (always present on a stored object)."""
    meta = obj.metadata
    if not isinstance(meta, V1ObjectMeta):
        raise KubernetesUnavailable(f"the Kubernetes API returned a {type(obj).__name__} without metadata")
    return meta


def name_of(obj: Any) -> str:
    return str(metadata(obj).name)


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason or exc.body or "")


class Cluster:
    """One API client for one consumer; every method raises KubernetesUnavailable on failure."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client
        self.host: str = api_client.configuration.host
        self._batch = BatchV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._coordination = CoordinationV1Api(api_client)

    @classmethod
    async def connect(cls, options: KubernetesOptions) -> Cluster:
        """A client from the in-cluster service account, or from a kubeconfig file (the option,
        else $KUBECONFIG or ~/.kube/config)."""
        try:
            if options.in_cluster:
                configuration = Configuration()
                kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return cls(ApiClient(configuration))
            return cls(
                await kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=options.kubeconfig, context=options.context, persist_config=False
                )
            )
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            source = (
                "in-cluster service account"
                if options.in_cluster
                else (f"kubeconfig {options.kubeconfig or '(default location)'}")
            )
            raise KubernetesUnavailable(
                f"cannot configure the Kubernetes client from the {source}: {exc}"
            ) from exc

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]

    def _failure(self, doing: str, exc: BaseException) -> KubernetesUnavailable:
        if isinstance(exc, ApiException):
            return KubernetesUnavailable(
                f"the Kubernetes API at {self.host} refused to {doing}: {exc.status} {_api_message(exc)}"
            )
        return KubernetesUnavailable(
            f"the Kubernetes API at {self.host} is unreachable (while trying to {doing}): "
            f"{type(exc).__name__}: {exc}"
        )

    async def _call(self, doing: str, call: Any, *, missing_ok: bool = False) -> Any:
        try:
            return await call
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise self._failure(doing, exc) from exc
        except NETWORK_ERRORS as exc:
            raise self._failure(doing, exc) from exc

    # Jobs

    async def create_job(self, job: V1Job) -> tuple[V1Job, bool]:
        """Create ``job``, or adopt the Job of that name if it exists (a repeated attempt):
        returns the Job and whether it was adopted. A same-named Job still being deleted (a
        cancelled run of this attempt) is waited out first, then created afresh."""
        namespace, name = str(metadata(job).namespace), name_of(job)
        doing = f"create Job {namespace}/{name}"
        while True:
            try:
                created = await self._batch.create_namespaced_job(
                    namespace, job, _request_timeout=REQUEST_TIMEOUT
                )
                return created, False
            except ApiException as exc:
                if exc.status != 409:
                    raise self._failure(doing, exc) from exc
            except NETWORK_ERRORS as exc:
                raise self._failure(doing, exc) from exc
            existing = await self.read_job(namespace, name)
            if existing is None:
                continue
            if metadata(existing).deletion_timestamp is None:
                return existing, True
            await self.wait_gone(namespace, name)

    async def read_job(self, namespace: str, name: str) -> V1Job | None:
        job: V1Job | None = await self._call(
            f"read Job {namespace}/{name}",
            self._batch.read_namespaced_job(name, namespace, _request_timeout=REQUEST_TIMEOUT),
            missing_ok=True,
        )
        return job

    async def relabel_job(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        await self._call(
            f"relabel Job {namespace}/{name}",
            self._batch.patch_namespaced_job(
                name,
                namespace,
                {"metadata": {"labels": labels}},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
            missing_ok=True,
        )

    async def list_jobs(self, namespace: str, selector: str) -> list[V1Job]:
        jobs = await self._call(
            f"list Jobs in {namespace} ({selector})",
            self._batch.list_namespaced_job(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return list(jobs.items)

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and, through foreground propagation, its pods; False if already gone.

        Read raw: for a foreground deletion the server answers with the Job itself (its
        deletionTimestamp set), which the generated client would fail to parse as a V1Status.
        """
        doing = f"delete Job {namespace}/{name}"
        try:
            response = await self._batch.delete_namespaced_job_without_preload_content(
                name,
                namespace,
                body=V1DeleteOptions(propagation_policy="Foreground"),
                _request_timeout=REQUEST_TIMEOUT,
            )
            try:
                status, body = response.status, await response.read()
            finally:
                response.release()
        except NETWORK_ERRORS as exc:
            raise self._failure(doing, exc) from exc
        if status == 404:
            return False
        if not 200 <= status < 300:
            raise self._failure(doing, ApiException(status=status, reason=body.decode("utf-8", "replace")))
        return True

    async def wait_gone(self, namespace: str, name: str, *, poll: float = 0.5) -> None:
        """Return once the Job no longer exists: with foreground deletion, once its pods are gone."""
        while await self.read_job(namespace, name) is not None:  # noqa: ASYNC110  (polls the API)
            await asyncio.sleep(poll)

    async def wait_finished(self, namespace: str, name: str) -> tuple[V1Job, JobOutcome]:
        """Watch the Job until it is Complete or Failed. Reads it first (so a Job that finished
        between create and watch is seen), then watches from that resourceVersion; when the watch
        ends or its resourceVersion is too old (410 Gone), reads and watches again."""
        while True:
            job = await self.read_job(namespace, name)
            if job is None:
                raise JobVanished(name)
            if (final := outcome(job)) is not None:
                return job, final
            try:
                async with watch.Watch() as stream:  # type: ignore[no-untyped-call]
                    async for event in stream.stream(
                        self._batch.list_namespaced_job,
                        namespace,
                        field_selector=f"metadata.name={name}",
                        resource_version=metadata(job).resource_version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=WATCH_SECONDS,
                        _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT,
                    ):
                        kind = event["type"]
                        if kind == "DELETED":
                            raise JobVanished(name)
                        if kind in ("ADDED", "MODIFIED") and (final := outcome(event["object"])) is not None:
                            return event["object"], final
            except ApiException as exc:
                if exc.status != 410:
                    raise self._failure(f"watch Job {namespace}/{name}", exc) from exc
                log.info("kubernetes.watch_expired", job=name, namespace=namespace)
            except NETWORK_ERRORS as exc:
                raise self._failure(f"watch Job {namespace}/{name}", exc) from exc

    async def log_tail(self, namespace: str, job: str, lines: int) -> str:
        """The last ``lines`` lines of the Job's newest pod; a note instead if there is none.
        Never raises: a missing log must not hide the Job's outcome."""
        if lines <= 0:
            return ""
        try:
            pods = await self._core.list_namespaced_pod(
                namespace, label_selector=f"job-name={job}", _request_timeout=REQUEST_TIMEOUT
            )
            if not pods.items:
                return "(no pod found for the Job)"
            newest = max(
                pods.items, key=lambda p: metadata(p).creation_timestamp or datetime.min.replace(tzinfo=UTC)
            )
            text: str = await self._core.read_namespaced_pod_log(
                name_of(newest),
                namespace,
                container=CONTAINER,
                tail_lines=lines,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return text
        except (ApiException, *NETWORK_ERRORS) as exc:
            return f"(log unavailable: {self._failure(f'read the log of Job {job}', exc)})"

    # Consumer leases: how consumers tell a live peer's Jobs from a dead one's

    async def hold_lease(self, namespace: str, name: str, *, labels: dict[str, str], seconds: int) -> None:
        """Create or renew this consumer's Lease."""
        # MicroTime is parsed with exactly six fraction digits, and isoformat() drops a zero fraction.
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond or 1)
        lease = V1Lease(
            metadata=V1ObjectMeta(name=name, namespace=namespace, labels=labels),
            spec=V1LeaseSpec(holder_identity=name, lease_duration_seconds=seconds, renew_time=now),
        )
        renewed = await self._call(
            f"renew Lease {namespace}/{name}",
            self._coordination.replace_namespaced_lease(
                name, namespace, lease, _request_timeout=REQUEST_TIMEOUT
            ),
            missing_ok=True,
        )
        if renewed is None:
            lease.spec = V1LeaseSpec(
                holder_identity=name, lease_duration_seconds=seconds, renew_time=now, acquire_time=now
            )
            await self._call(
                f"create Lease {namespace}/{name}",
                self._coordination.create_namespaced_lease(
                    namespace, lease, _request_timeout=REQUEST_TIMEOUT
                ),
            )

    async def live_leases(self, namespace: str, selector: str) -> set[str]:
        """Names of the Leases under ``selector`` renewed within their duration; expired ones are
        deleted on the way."""
        leases = await self._call(
            f"list Leases in {namespace}",
            self._coordination.list_namespaced_lease(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        now = datetime.now(UTC)
        live = set()
        for lease in leases.items:
            spec = lease.spec
            renewed = spec.renew_time if spec else None
            if renewed is not None and (now - renewed).total_seconds() <= (spec.lease_duration_seconds or 0):
                live.add(name_of(lease))
            else:
                await self.drop_lease(namespace, name_of(lease))
        return live

    async def drop_lease(self, namespace: str, name: str) -> None:
        await self._call(
            f"delete Lease {namespace}/{name}",
            self._coordination.delete_namespaced_lease(name, namespace, _request_timeout=REQUEST_TIMEOUT),
            missing_ok=True,
        )
