"""The Docker runtime's rules that need no engine: attributes, worker options, log frames."""

from __future__ import annotations

import struct
import uuid
from datetime import timedelta
from typing import Any

import pytest

from taskbroker.models import Task, TaskState, utcnow
from taskbroker.runtimes.base import RuntimeConfig, RuntimeConfigError, TaskFailed
from taskbroker.runtimes.docker import DockerRuntime
from taskbroker.runtimes.docker_engine import DEFAULT_DOCKER_HOST, demultiplex, docker_host
from taskbroker.runtimes.docker_spec import DockerOptions, PullPolicy
from taskbroker.runtimes.registry import load_runtime


def _task(attributes: dict[str, Any]) -> Task:
    now = utcnow()
    return Task(
        id=uuid.uuid4(),
        scheduler="s",
        attributes=attributes,
        timeout=now + timedelta(hours=1),
        state=TaskState.RUNNING,
        created_at=now,
        attempts=1,
    )


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_the_docker_runtime_is_installed_under_its_entry_point() -> None:
    assert load_runtime("docker") is DockerRuntime


@pytest.mark.parametrize(
    ("attributes", "complaint"),
    [
        ({}, "image: Field required"),
        ({"image": ""}, "image: String should have at least 1 character"),
        ({"image": "busybox?x=1"}, "image: String should match pattern"),
        ({"image": "busybox", "privileged": True}, "privileged: Extra inputs are not permitted"),
        ({"image": "busybox", "binds": ["/:/host"]}, "binds: Extra inputs are not permitted"),
        ({"image": "busybox", "network_mode": "host"}, "network_mode: Extra inputs are not permitted"),
        ({"image": "busybox", "cap_add": ["SYS_ADMIN"]}, "cap_add: Extra inputs are not permitted"),
        ({"image": "busybox", "command": "echo hi"}, "command: Input should be a valid list"),
        ({"image": "busybox", "env": {"A": 1}}, "env.A: Input should be a valid string"),
        ({"image": "busybox", "env": {"not a name": "x"}}, "env.not a name.[key]: String should match"),
        ({"image": "busybox", "workdir": "relative"}, "workdir: String should match"),
        ({"image": "busybox", "labels": {"io.taskbroker.task": "x"}}, "labels under 'io.taskbroker'"),
    ],
)
async def test_bad_attributes_fail_the_task_naming_the_field(
    attributes: dict[str, Any], complaint: str
) -> None:
    runtime = DockerRuntime(RuntimeConfig(scheduler="s", concurrency=1, options={"images": "*"}))
    try:
        with pytest.raises(TaskFailed, match="invalid attributes for the docker runtime") as failure:
            await runtime.run(_task(attributes))
        assert complaint in str(failure.value)
    finally:
        await runtime.close()


def test_options_default_to_no_image_allowed_pulling_missing_images_and_a_bounded_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)

    options = DockerOptions.parse({})

    assert options.images == ()
    assert not options.image_allowed("busybox:latest")
    assert options.pull is PullPolicy.MISSING
    assert (options.log_tail_lines, options.log_tail_bytes) == (100, 16384)
    assert options.docker_host == DEFAULT_DOCKER_HOST
    assert options.orphan_sweep_interval == 60


def test_image_patterns_are_fnmatch_style_and_comma_separated() -> None:
    options = DockerOptions.parse({"images": "registry.local/team/*, busybox:1.*"})

    assert options.image_allowed("registry.local/team/report:2")
    assert options.image_allowed("busybox:1.36")
    assert not options.image_allowed("busybox:latest")
    assert not options.image_allowed("evil.example/registry.local/team/x")


def test_the_docker_host_option_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///from/env.sock")

    assert docker_host(None) == "unix:///from/env.sock"
    assert DockerOptions.parse({"docker_host": "tcp://127.0.0.1:2375"}).docker_host == "tcp://127.0.0.1:2375"


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"pull": "sometimes"}, "option pull='sometimes': use one of"),
        ({"log_tail_lines": "many"}, "option log_tail_lines='many' is not an integer"),
        ({"log_tail_bytes": "0"}, "option log_tail_bytes='0' must be at least 1"),
        ({"privileged": "true"}, "unknown docker runtime options ['privileged']"),
        ({"docker_host": "ftp://engine"}, "unsupported Docker host 'ftp://engine'"),
    ],
)
def test_bad_worker_options_stop_the_worker_with_a_clear_message(
    options: dict[str, str], complaint: str
) -> None:
    with pytest.raises(RuntimeConfigError) as failure:
        DockerRuntime(RuntimeConfig(scheduler="s", concurrency=1, options=options))
    assert complaint in str(failure.value)


def test_multiplexed_logs_are_joined_in_the_order_written() -> None:
    stream = _frame(1, b"out 1\n") + _frame(2, b"err 1\n") + _frame(1, "out é\n".encode())

    assert demultiplex(stream) == "out 1\nerr 1\nout é\n"


def test_a_raw_tty_log_stream_is_kept_as_it_is() -> None:
    assert demultiplex(b"plain text from a tty container\n") == "plain text from a tty container\n"


def test_an_empty_log_stream_is_empty() -> None:
    assert demultiplex(b"") == ""
