"""The built-in Inline runtime and the example `subprocess` plugin both pass the conformance checks
that runtimes.testing offers every plugin author."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskbroker.models import Task
from taskbroker.runtimes.base import Runtime, RuntimeConfig
from taskbroker.runtimes.inline import InlineRuntime
from taskbroker.runtimes.registry import load_runtime
from taskbroker.runtimes.testing import RuntimeConformance
from tests.support.example_plugin import install_example_plugin

INLINE = RuntimeConformance(
    InlineRuntime,
    succeeds={"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"hello": "world"}},
    fails={"function": "taskbroker.runtimes.builtin:fail", "kwargs": {"message": "boom"}},
    runs_until_cancelled={"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 3600}},
)


@pytest.mark.parametrize("check", RuntimeConformance.CHECKS)
async def test_inline_runtime_conforms(check: str) -> None:
    await INLINE.check(check)


@pytest.fixture(scope="module")
def subprocess_runtime() -> type[Runtime]:
    install_example_plugin()
    return load_runtime("subprocess")


@pytest.mark.parametrize("check", RuntimeConformance.CHECKS)
async def test_subprocess_runtime_conforms(
    check: str, subprocess_runtime: type[Runtime], tmp_path: Path
) -> None:
    def marker(task: Task) -> Path:
        return tmp_path / f"{task.id}.started"

    async def started(runtime: Runtime, task: Task) -> bool:
        return marker(task).exists()

    conformance = RuntimeConformance(
        subprocess_runtime,
        succeeds={"command": ["echo", "hello"]},
        fails={"command": ["sh", "-c", "echo broken >&2; exit 3"]},
        # The marker is named after the task, so the probe knows this run's process is up.
        runs_until_cancelled={
            "command": ["sh", "-c", f'touch "{tmp_path}/$TASKBROKER_TASK_ID.started"; exec sleep 3600'],
        },
        config=RuntimeConfig(
            scheduler="conformance",
            concurrency=4,
            options={"executables": "echo,sh", "state_dir": str(tmp_path / "state"), "kill_grace": "5"},
        ),
        started=started,
    )
    await conformance.check(check)
