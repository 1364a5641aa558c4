"""The real container engine the Docker runtime's tests use: podman's Docker-compatible service,
which .ci/container-engine.sh starts (with a local busybox image, as no registry is reachable)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

DOCKER_HOST = os.environ.get("TASKBROKER_TEST_DOCKER_HOST", "unix:///tmp/podman.sock")
TEST_IMAGE = "localhost/busybox:latest"
"""Imported by .ci/container-engine.sh from busybox-static: sh, echo, sleep, cat, ls, env, pwd."""


def require_engine() -> str:
    """DOCKER_HOST for the tests; skips loudly when the engine's socket does not exist."""
    parts = urlsplit(DOCKER_HOST)
    if parts.scheme == "unix" and not os.path.exists(parts.path):
        message = (
            f"NO CONTAINER ENGINE: {parts.path} does not exist, so the Docker runtime is NOT tested. "
            "Run .ci/container-engine.sh (CI does) or set TASKBROKER_TEST_DOCKER_HOST."
        )
        print(f"\n!!! {message}\n")
        pytest.skip(message)
    return DOCKER_HOST
