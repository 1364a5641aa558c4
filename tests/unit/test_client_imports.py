"""What importing the client loads: a service that only schedules tasks gets the client and the
wire shapes, never the server (its Redis store, the HTTP framework, the queue, the dev mode's
embedded servers). Each check runs in a fresh interpreter, since this one has loaded everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT

SERVER_MODULES = (
    "redis",
    "hiredis",
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
    "pika",
    "fakeredis",
    "lupa",
    "prometheus_client",
    "structlog",
    "api",
    "scheduler_worker",
    "timeout_daemon",
    "schedule_firer",
    "runtimes",
    "taskbroker.store",
    "taskbroker.script_calls",
    "taskbroker.events",
    "taskbroker.tokens",
    "taskbroker.settings",
)
"""Top-level packages and taskbroker modules that only the server processes need."""


def _loaded_after(statement: str) -> set[str]:
    """Which of SERVER_MODULES (itself or a module beneath it) is in sys.modules after
    ``statement``, run in a fresh interpreter importing this worktree's code."""
    probe = (
        f"{statement}\n"
        "import json, sys\n"
        f"server = {SERVER_MODULES!r}\n"
        "print(json.dumps([s for s in server if any(m == s or m.startswith(s + '.') "
        "for m in sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "import taskbroker",
        "import taskbroker.client",
        "from taskbroker.client import Client, AsyncClient, TaskEvent, EventKind, TaskSpec",
        "import taskbroker.client.sync, taskbroker.client.asynchronous, taskbroker.client.calls",
        "import taskbroker.models, taskbroker.event_models, taskbroker.token_models",
        "import taskbroker.schedule_models",
    ],
)
def test_importing_the_client_and_the_wire_shapes_loads_no_server_module(statement: str) -> None:
    assert _loaded_after(statement) == set()


def test_the_probe_sees_a_server_module_when_one_is_imported() -> None:
    """The check above would pass vacuously if the probe could not see modules at all."""
    assert {"taskbroker.store", "redis"} <= _loaded_after("import taskbroker.store")
