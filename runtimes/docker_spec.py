"""What a Docker task may ask for (its attributes) and what the operator allows (worker options).

Attributes come from API clients, so they name only harmless things: image, command, env, working
directory, labels. Anything else (privileged, binds, network mode, capabilities, devices, user
namespace, ...) is an unknown attribute and fails the task; the operator's options decide which
images may run at all.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskbroker.runtimes.base import RuntimeConfigError
from taskbroker.runtimes.docker_engine import docker_host

LABEL_PREFIX = "io.taskbroker"
"""Labels the runtime sets itself; a task may not set or override them."""
DEFAULT_LOG_TAIL_LINES = 100
DEFAULT_LOG_TAIL_BYTES = 16 * 1024
DEFAULT_ORPHAN_SWEEP_INTERVAL = 60

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]


class DockerTaskSpec(BaseModel):
    """The attributes a Docker task carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", examples=["alpine:3.20"]
    )
    command: list[str] | None = Field(default=None, max_length=1024, description="Replaces the image's CMD.")
    env: dict[EnvName, str] = Field(default_factory=dict, max_length=1024)
    workdir: str | None = Field(default=None, pattern=r"^/", max_length=4096)
    labels: dict[str, str] = Field(default_factory=dict, max_length=256)

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in labels if k == LABEL_PREFIX or k.startswith(LABEL_PREFIX + "."))
        if reserved:
            raise ValueError(f"labels under {LABEL_PREFIX!r} are set by taskbroker: {reserved}")
        return labels

    @field_validator("env", "labels")
    @classmethod
    def _no_nul(cls, values: dict[str, str]) -> dict[str, str]:
        if any("\x00" in k or "\x00" in v for k, v in values.items()):
            raise ValueError("keys and values may not contain NUL characters")
        return values


class PullPolicy(enum.StrEnum):
    NEVER = "never"
    MISSING = "missing"
    ALWAYS = "always"


@dataclass(frozen=True)
class DockerOptions:
    """The per-scheduler settings a worker passes as ``--option KEY=VALUE``."""

    images: tuple[str, ...]
    """fnmatch patterns of images tasks may run; empty (the default) allows none."""
    pull: PullPolicy
    log_tail_lines: int
    log_tail_bytes: int
    docker_host: str
    orphan_sweep_interval: float
    """Seconds between searches for containers whose consumer died."""

    KEYS = ("images", "pull", "log_tail_lines", "log_tail_bytes", "docker_host", "orphan_sweep_interval")

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> DockerOptions:
        unknown = sorted(set(options) - set(cls.KEYS))
        if unknown:
            raise RuntimeConfigError(f"unknown docker runtime options {unknown}; known: {list(cls.KEYS)}")
        try:
            pull = PullPolicy(options.get("pull", PullPolicy.MISSING.value))
        except ValueError:
            raise RuntimeConfigError(
                f"option pull={options['pull']!r}: use one of {[p.value for p in PullPolicy]}"
            ) from None
        return cls(
            images=tuple(p.strip() for p in options.get("images", "").split(",") if p.strip()),
            pull=pull,
            log_tail_lines=_positive_int(options, "log_tail_lines", DEFAULT_LOG_TAIL_LINES),
            log_tail_bytes=_positive_int(options, "log_tail_bytes", DEFAULT_LOG_TAIL_BYTES),
            docker_host=docker_host(options.get("docker_host")),
            orphan_sweep_interval=_positive_int(
                options, "orphan_sweep_interval", DEFAULT_ORPHAN_SWEEP_INTERVAL
            ),
        )

    def image_allowed(self, image: str) -> bool:
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in self.images)


def _positive_int(options: Mapping[str, str], key: str, default: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RuntimeConfigError(f"option {key}={raw!r} is not an integer") from None
    if value < 1:
        raise RuntimeConfigError(f"option {key}={raw!r} must be at least 1")
    return value
