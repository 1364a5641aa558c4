"""A runtime added by installing a package, end to end: the example `subprocess` plugin serving a
scheduler through real `taskbroker api` and `taskbroker worker` processes."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.blocking_api import BlockingApi
from tests.support.example_plugin import install_example_plugin
from tests.support.plugin_dists import IMPORT_ERROR, write_plugin
from tests.support.processes import ManagedProcess, Processes
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "commands"


@pytest.fixture(scope="module", autouse=True)
def _plugin_installed() -> None:
    install_example_plugin()


@pytest.fixture
def api(processes: Processes, http: httpx.Client) -> BlockingApi:
    _, url = processes.api()
    client = BlockingApi(http, url)
    client.register(SCHEDULER, runtime="subprocess")
    return client


def _worker(processes: Processes, tmp_path: Path, name: str = "worker") -> ManagedProcess:
    worker = processes.start(
        name,
        "worker",
        "--scheduler",
        SCHEDULER,
        "--option",
        "executables=echo,sh",
        "--option",
        f"state_dir={tmp_path / 'state'}",
        "--option",
        "kill_grace=1",
    )
    worker.wait_for_event("consumer.subscribed")
    return worker


def _pid_written(path: Path) -> int:
    def written() -> int | None:
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    pid: int | None = eventually_sync(written, what=f"the command to write its pid to {path}")
    assert pid is not None
    return pid


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone; or reaped between open and read (ESRCH)
        return False


def test_a_command_scheduled_over_the_api_completes_with_its_output(
    processes: Processes, api: BlockingApi, tmp_path: Path
) -> None:
    _worker(processes, tmp_path)

    task = api.schedule(SCHEDULER, {"command": ["echo", "hello from a plugin"]})

    final = api.wait_for_state(task["id"])
    assert final["state"] == "complete", final
    assert final["result"] == {"exit_code": 0, "output": "hello from a plugin\n", "output_truncated": False}


def test_a_failing_command_fails_the_task_with_its_output(
    processes: Processes, api: BlockingApi, tmp_path: Path
) -> None:
    _worker(processes, tmp_path)

    task = api.schedule(SCHEDULER, {"command": ["sh", "-c", "echo no space left >&2; exit 28"]})

    final = api.wait_for_state(task["id"])
    assert final["state"] == "failed", final
    assert final["error"] == "sh exited with code 28: no space left\n"


def test_aborting_a_long_command_kills_it(
    processes: Processes, api: BlockingApi, http: httpx.Client, tmp_path: Path
) -> None:
    _worker(processes, tmp_path)
    pid_file = tmp_path / "long.pid"
    task = api.schedule(SCHEDULER, {"command": ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 3600"]})
    pid = _pid_written(pid_file)

    aborted = http.post(f"{api.url}/task/{task['id']}/abort")

    assert aborted.status_code == 200, aborted.text
    eventually_sync(lambda: not _running(pid), what=f"command {pid} to be killed")
    assert api.task(task["id"])["state"] == "aborted"


def test_a_crashed_workers_command_is_killed_when_its_replacement_starts(
    processes: Processes, api: BlockingApi, tmp_path: Path
) -> None:
    crashing = _worker(processes, tmp_path, "crashing")
    pid_file = tmp_path / "orphan.pid"
    api.schedule(SCHEDULER, {"command": ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 3600"]})
    pid = _pid_written(pid_file)

    try:
        crashing.send(signal.SIGKILL)
        crashing.wait()
        assert _running(pid), "the command outlived its consumer, as after any crash"
        replacement = _worker(processes, tmp_path, "replacement")

        assert not _running(pid)
        assert replacement.events("subprocess.orphan_killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_a_worker_refuses_an_option_its_runtime_cannot_use(
    processes: Processes, api: BlockingApi, tmp_path: Path
) -> None:
    worker = processes.start(
        "worker", "worker", "--scheduler", SCHEDULER, "--option", "executables=no-such-command-anywhere"
    )

    assert worker.wait() != 0
    assert "'no-such-command-anywhere'" in " ".join(worker.stderr().split())
    assert not worker.events("consumer.subscribed")


def test_a_worker_whose_runtime_plugin_is_broken_exits_naming_the_package(
    processes: Processes, http: httpx.Client, tmp_path: Path
) -> None:
    _, url = processes.api()
    BlockingApi(http, url).register("haunted", runtime="haunted")
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins,
        package="taskbroker-haunted",
        runtime="haunted",
        target="haunted_runtime:HauntedRuntime",
        module_source=IMPORT_ERROR,
    )
    path = os.pathsep.join([str(plugins), processes.env["PYTHONPATH"]])

    worker = processes.start("worker", "worker", "--scheduler", "haunted", env={"PYTHONPATH": path})

    assert worker.wait() != 0
    stderr = " ".join(worker.stderr().split())
    assert "taskbroker-haunted 1.0" in stderr, stderr
    assert "missing_dependency_of_the_plugin" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_an_attempt_past_its_attempt_timeout_is_killed_and_retried(
    processes: Processes, api: BlockingApi, http: httpx.Client, tmp_path: Path
) -> None:
    _worker(processes, tmp_path)
    processes.timeout_daemon()
    pid_file, marker = tmp_path / "slow.pid", tmp_path / "second-attempt"
    script = (
        f"if [ -e {marker} ]; then echo second; exit 0; fi; "
        f"touch {marker}; echo $$ > {pid_file}; exec sleep 3600"
    )
    body = {
        "scheduler": SCHEDULER,
        "attributes": {"command": ["sh", "-c", script]},
        "attempt_timeout": 1,
        "retry": {"max_attempts": 2, "initial_delay": 0.2},
    }
    scheduled = http.post(f"{api.url}/task/schedule", json=body)
    assert scheduled.status_code == 201, scheduled.text
    task = scheduled.json()

    final = api.wait_for_state(task["id"])

    assert final["state"] == "complete", final
    assert final["attempts"] == 2
    assert final["result"]["output"] == "second\n"
    assert "attempt_timeout of 1 s" in final["errors"][0]["error"]
    # The first attempt's command was really stopped, not left running beside the second.
    assert not _running(int(pid_file.read_text()))
