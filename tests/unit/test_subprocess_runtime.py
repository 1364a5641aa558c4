"""The example `subprocess` plugin on its own: what a command may run, what it gets, what comes
back, and that stopping a run stops everything it started."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskbroker.runtimes.base import Runtime, RuntimeConfig, RuntimeConfigError, TaskCancelled, TaskFailed
from taskbroker.runtimes.registry import load_runtime
from taskbroker.runtimes.testing import make_task
from tests.support.example_plugin import install_example_plugin
from tests.support.waiting import eventually

RuntimeFactory = Callable[..., Runtime]


def _read_pids(*files: Path) -> list[int] | None:
    """The pids the command wrote, once it has written them all."""
    try:
        return [int(file.read_text()) for file in files]
    except (FileNotFoundError, ValueError):
        return None


def _start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whoever inherited it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone; or reaped between open and read (ESRCH)
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(scope="module")
def runtime_class() -> type[Runtime]:
    install_example_plugin()
    return load_runtime("subprocess")


@pytest.fixture
async def make_runtime(runtime_class: type[Runtime], tmp_path: Path) -> AsyncIterator[RuntimeFactory]:
    """Builds started runtimes with the given options (state in the test's tmp dir); closes them."""
    built: list[Runtime] = []

    def make(**options: str) -> Runtime:
        options.setdefault("state_dir", str(tmp_path / "state"))
        runtime = runtime_class(RuntimeConfig(scheduler="sub", concurrency=4, options=options))
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        await runtime.close()


async def _started(make_runtime: RuntimeFactory, **options: str) -> Runtime:
    runtime = make_runtime(**options)
    await runtime.start()
    return runtime


async def test_a_command_completes_with_its_exit_code_and_output(make_runtime: RuntimeFactory) -> None:
    runtime = await _started(make_runtime, executables="echo")

    result = await runtime.run(make_task({"command": ["echo", "hello", "world"]}))

    assert result == {"exit_code": 0, "output": "hello world\n", "output_truncated": False}


async def test_by_default_no_executable_is_allowed(make_runtime: RuntimeFactory) -> None:
    runtime = await _started(make_runtime)

    with pytest.raises(TaskFailed, match=r"'echo' is not an allowed executable.*allowed: none"):
        await runtime.run(make_task({"command": ["echo", "hi"]}))


async def test_a_task_cannot_swap_an_allowed_name_for_another_program_through_its_path(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    impostor = tmp_path / "bin" / "echo"
    impostor.parent.mkdir()
    impostor.write_text("#!/bin/sh\necho impostor\n")
    impostor.chmod(0o755)
    runtime = await _started(make_runtime, executables="echo")

    result = await runtime.run(
        make_task({"command": ["echo", "real"], "env": {"PATH": str(impostor.parent)}})
    )
    assert result["output"] == "real\n"
    with pytest.raises(TaskFailed, match="not an allowed executable"):
        await runtime.run(make_task({"command": [str(impostor)]}))
    with pytest.raises(TaskFailed, match="not an allowed executable"):
        await runtime.run(make_task({"command": ["./bin/echo"], "cwd": str(tmp_path)}))


async def test_a_non_zero_exit_fails_the_task_with_the_output_tail(make_runtime: RuntimeFactory) -> None:
    runtime = await _started(make_runtime, executables="sh")

    with pytest.raises(TaskFailed, match=r"sh exited with code 3: disk full"):
        await runtime.run(make_task({"command": ["sh", "-c", "echo disk full >&2; exit 3"]}))


async def test_only_the_tail_of_a_long_output_is_kept(make_runtime: RuntimeFactory) -> None:
    runtime = await _started(make_runtime, executables="sh", output_tail="100")

    result = await runtime.run(make_task({"command": ["sh", "-c", "seq 1 100000"]}))

    assert result["output_truncated"] is True
    assert len(result["output"]) <= 100
    assert result["output"].endswith("99999\n100000\n")


async def test_the_command_sees_its_env_and_the_task_identity_but_not_the_consumers_secrets(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKBROKER_REDIS_URL", "redis://:secret@db:6379/0")
    runtime = await _started(make_runtime, executables="env")
    task = make_task({"command": ["env"], "env": {"GREETING": "hi"}, "cwd": str(tmp_path)}, attempts=2)

    output = (await runtime.run(task))["output"]

    variables = dict(line.split("=", 1) for line in output.splitlines())
    assert variables["GREETING"] == "hi"
    assert variables["TASKBROKER_TASK_ID"] == str(task.id)
    assert variables["TASKBROKER_TASK_ATTEMPT"] == "2"
    assert "TASKBROKER_REDIS_URL" not in variables
    assert "secret" not in output


async def test_a_command_past_its_own_timeout_is_stopped_and_fails(make_runtime: RuntimeFactory) -> None:
    runtime = await _started(make_runtime, executables="sleep")

    with pytest.raises(TaskFailed, match=r"ran longer than its timeout of 0\.2 s"):
        await runtime.run(make_task({"command": ["sleep", "3600"], "timeout": 0.2}))


@pytest.mark.parametrize(
    ("attributes", "complaint"),
    [
        ({}, "command"),
        ({"command": []}, "command"),
        ({"command": "echo hi"}, "command"),
        ({"command": ["echo"], "comand": ["typo"]}, "comand"),
        ({"command": ["echo", "nul\x00byte"]}, "command"),
        ({"command": ["echo"], "timeout": -1}, "timeout"),
    ],
)
async def test_invalid_attributes_fail_the_task_saying_what_is_wrong(
    make_runtime: RuntimeFactory, attributes: dict[str, Any], complaint: str
) -> None:
    runtime = await _started(make_runtime, executables="echo")

    with pytest.raises(TaskFailed, match=f"invalid attributes for the subprocess runtime.*{complaint}"):
        await runtime.run(make_task(attributes))


async def test_a_missing_working_directory_fails_the_task(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await _started(make_runtime, executables="echo")

    with pytest.raises(TaskFailed, match="cannot start 'echo'"):
        await runtime.run(make_task({"command": ["echo"], "cwd": str(tmp_path / "nowhere")}))


async def test_cancel_kills_the_whole_process_group_even_children_that_ignore_sigterm(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await _started(make_runtime, executables="sh", kill_grace="0.5")
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 3600 & echo $! > {pids}.child; echo $$ > {pids}; wait"
    task = make_task({"command": ["sh", "-c", script]})
    run = asyncio.create_task(runtime.run(task))

    written = await eventually(
        lambda: asyncio.to_thread(_read_pids, pids, Path(f"{pids}.child")),
        what="the shell and its child to start",
    )
    shell, child = written or pytest.fail("no pids")

    await runtime.cancel(task)
    with pytest.raises(TaskCancelled):
        await run
    await runtime.wait_stopped(task)

    assert not _alive(shell)
    assert not _alive(child)


async def test_a_background_child_left_behind_does_not_keep_the_task_running(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    runtime = await _started(make_runtime, executables="sh")
    child_pid = tmp_path / "child"

    result = await runtime.run(make_task({"command": ["sh", "-c", f"sleep 3600 & echo $! > {child_pid}"]}))

    assert result["exit_code"] == 0
    (child,) = _read_pids(child_pid) or [0]
    await eventually(
        lambda: asyncio.to_thread(lambda: not _alive(child)), what="the left-behind child to die"
    )


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"output_tail": "lots"}, "output_tail='lots' must be a positive number"),
        ({"kill_grace": "-1"}, "kill_grace='-1' must be a positive number"),
    ],
)
def test_bad_options_refuse_to_build_the_runtime(
    runtime_class: type[Runtime], options: dict[str, str], complaint: str
) -> None:
    with pytest.raises(RuntimeConfigError, match=complaint):
        runtime_class(RuntimeConfig(scheduler="sub", concurrency=1, options=options))


async def test_an_allowed_executable_that_does_not_exist_refuses_to_start(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(executables="echo,no-such-command-anywhere")

    with pytest.raises(RuntimeConfigError, match="'no-such-command-anywhere'"):
        await runtime.start()


@pytest.fixture
def orphan(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """As a SIGKILLed consumer leaves it: a command group still running, and its record naming
    a consumer pid that is dead."""
    command = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    dead_consumer = subprocess.Popen(["true"])
    dead_consumer.wait()
    state = tmp_path / "state" / "sub"
    state.mkdir(parents=True)
    record = {"pgid": command.pid, "started": _start_ticks(command.pid), "consumer_pid": dead_consumer.pid}
    (state / "0b6f0a52-5b2b-4bfb-9a63-52f2b2a53c1a.json").write_text(json.dumps(record))
    yield command
    command.kill()
    command.wait()


async def test_start_kills_the_commands_of_a_consumer_that_died(
    make_runtime: RuntimeFactory, orphan: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    await make_runtime().start()

    assert await asyncio.to_thread(orphan.wait, 10) == -signal.SIGKILL
    assert not list((tmp_path / "state" / "sub").glob("*.json"))


async def test_start_leaves_the_commands_of_a_live_consumer_alone(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    busy = await _started(make_runtime, executables="sleep")
    task = make_task({"command": ["sleep", "3600"]})
    run = asyncio.create_task(busy.run(task))
    state = tmp_path / "state" / "sub"
    await eventually(lambda: asyncio.to_thread(lambda: any(state.glob("*.json"))), what="the run's record")

    await make_runtime().start()  # a second consumer of the scheduler on the same host

    assert not run.done()
    await busy.cancel(task)
    with pytest.raises(TaskCancelled):
        await run
