"""Real `taskbroker` processes for end-to-end tests: started with the test's isolated settings,
logging to files under the test's tmp_path, awaited by what they report (a log event, /health),
and always killed at teardown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.support.waiting import eventually_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0
TEST_ALLOW = ("tests.support.recorder", "taskbroker.runtimes.builtin")


def taskbroker_command() -> list[str]:
    """The console script installed next to this interpreter, so subprocesses run the same venv."""
    script = Path(sys.executable).parent / "taskbroker"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from taskbroker.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_env(
    *,
    key_prefix: str,
    redis_url: str | None,
    amqp_url: str | None,
    lease: float = 5.0,
    sweep_interval: float = 0.2,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This environment without any TASKBROKER_* setting of the caller's, plus the test's own.

    A None URL leaves that variable unset (what `taskbroker dev` needs to pick its embedded
    servers). The repository root goes on PYTHONPATH so consumers can import tests.support.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBROKER_")}
    env.update(
        TASKBROKER_KEY_PREFIX=key_prefix,
        TASKBROKER_LEASE=str(lease),
        TASKBROKER_SWEEP_INTERVAL=str(sweep_interval),
        TASKBROKER_LOG_FORMAT="json",
        TASKBROKER_ADMIN_TOKEN=ADMIN_TOKEN,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    if redis_url is not None:
        env["TASKBROKER_REDIS_URL"] = redis_url
    if amqp_url is not None:
        env["TASKBROKER_AMQP_URL"] = amqp_url
    env.update(extra or {})
    return env


class ManagedProcess:
    """One subprocess with its stdout and stderr in files (a pipe nobody reads could block it)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        command: Sequence[str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        """``command`` (default: this environment's `taskbroker`) runs with ``args``."""
        self.name = name
        self.args = args
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self._files: list[IO[bytes]] = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.popen = subprocess.Popen(
            [*(command or taskbroker_command()), *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structured log lines (JSON on stderr), optionally only those of one event."""
        found = []
        for line in self.stderr().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if name is None or entry.get("event") == name:
                found.append(entry)
        return found

    def describe(self) -> str:
        """For failure messages: what the process said."""
        tail = "\n".join(self.stderr().splitlines()[-30:])
        return f"{self.name} (pid {self.pid}, exit {self.returncode}) {self.args}; stderr tail:\n{tail}"

    def _require_alive(self, waiting_for: str) -> None:
        if self.returncode is not None:
            raise AssertionError(f"{self.name} exited while waiting for {waiting_for}: {self.describe()}")

    def wait_for_event(self, event: str, *, deadline: float = START_DEADLINE) -> dict[str, Any]:
        def logged() -> dict[str, Any] | None:
            entries = self.events(event)
            if entries:
                return entries[0]
            self._require_alive(f"log event {event!r}")
            return None

        found: dict[str, Any] | None = eventually_sync(
            logged, what=f"{self.name} to log {event!r}", deadline=deadline
        )
        assert found is not None
        return found

    def wait_for_stdout(self, pattern: str, *, deadline: float = START_DEADLINE) -> re.Match[str]:
        def printed() -> re.Match[str] | None:
            match = re.search(pattern, self.stdout())
            if match is None:
                self._require_alive(f"{pattern!r} on stdout")
            return match

        match: re.Match[str] | None = eventually_sync(
            printed, what=f"{self.name} to print {pattern!r}", deadline=deadline
        )
        assert match is not None
        return match

    def send(self, signum: signal.Signals) -> None:
        if self.returncode is None:
            self.popen.send_signal(signum)

    def wait(self, deadline: float = START_DEADLINE) -> int:
        """The exit code; fails the test (and kills the process) if it does not exit in time."""
        try:
            return self.popen.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {deadline} s: {self.describe()}") from None

    def kill(self) -> None:
        if self.returncode is None:
            self.popen.kill()
        self.popen.wait(timeout=10)

    def close_logs(self) -> None:
        for handle in self._files:
            handle.close()


class Processes:
    """Starts taskbroker processes for one test and guarantees none outlives it."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self._started: list[ManagedProcess] = []

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(name, list(args), {**self.env, **(env or {})}, self.log_dir)
        self._started.append(process)
        return process

    def api(
        self, name: str = "api", *, env: Mapping[str, str] | None = None, workers: int = 1
    ) -> tuple[ManagedProcess, str]:
        """`taskbroker api` (``workers`` processes) on a free port, once /health answers; returns
        it with its base URL."""
        port = free_port()
        args = ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        process = self.start(name, *args, env=env)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            process._require_alive("/health")
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually_sync(healthy, what=f"{name} to answer /health", deadline=START_DEADLINE, interval=0.1)
        return process, url

    def worker(
        self,
        name: str,
        scheduler: str,
        *,
        concurrency: int = 4,
        allow: Iterable[str] = TEST_ALLOW,
        env: Mapping[str, str] | None = None,
        metrics_port: int = 0,
    ) -> ManagedProcess:
        """`taskbroker worker`, once it is subscribed to its queue."""
        args = ["worker", "--scheduler", scheduler, "--concurrency", str(concurrency)]
        for module in allow:
            args += ["--allow", module]
        if metrics_port:
            args += ["--metrics-port", str(metrics_port)]
        process = self.start(name, *args, env=env)
        process.wait_for_event("consumer.subscribed")
        return process

    def timeout_daemon(self, name: str = "timeout-daemon") -> ManagedProcess:
        process = self.start(name, "timeout-daemon")
        process.wait_for_event("timeout_daemon.started")
        return process

    def kill_all(self) -> None:
        for process in self._started:
            process.kill()
            process.close_logs()
