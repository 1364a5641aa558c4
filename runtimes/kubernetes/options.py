"""What a Kubernetes consumer is configured with (``--option KEY=VALUE``) and what a task asks for.

Both are pydantic models so a typo fails loudly: an unknown worker option stops the worker at
start, an unknown or invalid task attribute fails that task before anything reaches the cluster.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Self

from kubernetes.utils.quantity import parse_quantity
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskbroker.runtimes.base import RuntimeConfigError

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
"""A namespace name (RFC 1123 label)."""

EnvName = Annotated[str, Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253)]
ResourceName = Annotated[str, Field(pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9][-A-Za-z0-9_.]*$", max_length=253)]


def _quantity(value: str) -> str:
    try:
        parse_quantity(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)") from exc
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: dict[ResourceName, Quantity] = Field(default_factory=dict)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict)

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """Accept ``{"cpu": 1}`` as well as ``{"cpu": "1"}``, as kubectl does."""
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value


class JobAttributes(BaseModel):
    """The attributes a Kubernetes task carries."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=512, pattern=r"^\S+$", examples=["busybox:1.36"])
    command: list[str] | None = Field(default=None, min_length=1, examples=[["sh", "-c", "echo hi"]])
    env: dict[EnvName, str] = Field(default_factory=dict)
    resources: Resources | None = None
    namespace: DnsLabel | None = None


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class KubernetesOptions(BaseModel):
    """Per-scheduler settings, from the worker's ``--option KEY=VALUE``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: DnsLabel = "default"
    """Where Jobs go unless a task names another allowed namespace; also holds consumer Leases."""
    namespaces: tuple[DnsLabel, ...] = ()
    """Further namespaces tasks may name (comma-separated)."""
    service_account: str | None = None
    images: tuple[str, ...] = ()
    """fnmatch patterns of the images tasks may run (comma-separated). Empty: no image is allowed."""
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    ttl_after_finished: int = Field(default=3600, ge=0)
    log_tail: int = Field(default=100, ge=0, le=10_000)
    consumer_lease: int = Field(default=60, ge=5)
    """Seconds a consumer's Lease lives unrenewed before other consumers treat its Jobs as orphans."""

    _split = field_validator("namespaces", "images", mode="before")(_comma_list)

    @classmethod
    def from_worker_options(cls, options: dict[str, str]) -> Self:
        try:
            return cls.model_validate({key.replace("-", "_"): value for key, value in options.items()})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise RuntimeConfigError(
                f"invalid --option for the kubernetes runtime: {problems}. Known options: "
                f"{', '.join(sorted(cls.model_fields))}"
            ) from exc

    @property
    def allowed_namespaces(self) -> tuple[str, ...]:
        return (self.namespace, *(n for n in self.namespaces if n != self.namespace))

    def image_allowed(self, image: str) -> bool:
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in self.images)
