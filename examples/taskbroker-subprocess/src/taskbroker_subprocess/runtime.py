"""The `subprocess` runtime: run an allow-listed command on the consumer's host.

Task attributes (``CommandTask``)::

    {"command": ["make", "-C", "/srv/site", "publish"], "env": {"MODE": "prod"},
     "cwd": "/srv/site", "timeout": 600}

Consumer options (``taskbroker worker --option KEY=VALUE``):

- ``executables``: comma-separated commands tasks may run, as names on the consumer's PATH or
  absolute paths. Default: none, so every task fails until the operator allows something.
- ``output_tail``: bytes of combined stdout and stderr kept for the result (default 4096).
- ``kill_grace``: seconds between SIGTERM and SIGKILL when a run is stopped (default 5).
- ``state_dir``: where running commands are recorded, so a consumer restarted after a crash can
  stop what its predecessor left running (default: a per-user directory under the temp dir).

The command gets ``TASKBROKER_TASK_ID`` and ``TASKBROKER_TASK_ATTEMPT`` in its environment. The
result is ``{"exit_code": 0, "output": "...", "output_truncated": false}``; a non-zero exit fails
the task with the tail of the output as its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from taskbroker.models import Task
from taskbroker.runtimes.base import (
    RunRegistry,
    Runtime,
    RuntimeConfig,
    RuntimeConfigError,
    TaskCancelled,
    TaskFailed,
    parse_attributes,
)

log = structlog.get_logger("taskbroker_subprocess")

Argument = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
"""The only variables a command gets from the consumer: never its Redis or RabbitMQ credentials."""


class CommandTask(BaseModel):
    """The attributes a `subprocess` task carries."""

    model_config = ConfigDict(extra="forbid")

    command: list[Argument] = Field(min_length=1, examples=[["echo", "hello"]])
    env: dict[Argument, Argument] = Field(default_factory=dict)
    cwd: Argument | None = None
    timeout: float | None = Field(default=None, gt=0, description="Seconds the command may run.")


class OutputTail:
    """The last ``limit`` bytes of a stream, so an hours-long chatty command costs bounded memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated = False
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) > self.limit:
            del self._buffer[: len(self._buffer) - self.limit]
            self.truncated = True

    def text(self) -> str:
        data = bytes(self._buffer)
        if self.truncated:
            data = data.lstrip(bytes(range(0x80, 0xC0)))  # a UTF-8 character cut in half at the start
        return data.decode("utf-8", errors="replace")


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Collects the output tail and tells apart the command's exit from its pipe's end.

    asyncio's own Process.wait() returns only once every pipe is closed, which a background child
    holding stdout delays forever; we need the exit itself, to kill such leftovers.
    """

    def __init__(self, tail: OutputTail) -> None:
        self.tail = tail
        self.exited = asyncio.Event()
        self.output_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.tail.feed(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.output_closed.set()

    def process_exited(self) -> None:
        self.exited.set()


@dataclass
class _Run:
    """One live run: registered before run's first await, so a cancel is never lost."""

    pid: int | None = None
    exited: bool = False
    escalation: asyncio.Task[None] | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (Linux /proc), to tell our old process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _positive(options: dict[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RuntimeConfigError(f"option {key}={raw!r} must be a positive number")
    return value


class SubprocessRuntime(Runtime):
    """Each run is one command in its own process group (a new session), so cancel, a timeout and
    the end of the command reach everything it started: SIGTERM to the group, SIGKILL after
    ``kill_grace``. Whatever the command leaves running in its group when it exits is killed too.
    """

    name = "subprocess"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        options = config.options
        self._executables = [e.strip() for e in options.get("executables", "").split(",") if e.strip()]
        self._output_tail = int(_positive(options, "output_tail", 4096))
        self._kill_grace = _positive(options, "kill_grace", 5.0)
        default_state = Path(tempfile.gettempdir()) / f"taskbroker-subprocess-{os.getuid()}"
        self._state_dir = Path(options.get("state_dir") or default_state) / config.scheduler
        self._path = os.environ.get("PATH", os.defpath)
        self._allowed: dict[str, str] = {}
        """Real path of each allowed executable -> how the operator named it."""
        self._runs: RunRegistry[_Run] = RunRegistry()

    async def start(self) -> None:
        self._resolve_allowed()
        try:
            self._state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeConfigError(f"option state_dir: cannot create {self._state_dir}: {exc}") from exc
        self._adopt_orphans()

    async def close(self) -> None:
        for run in self._runs:
            if run.pid is not None and not run.exited:
                _signal_group(run.pid, signal.SIGKILL)

    async def run(self, task: Task) -> Any:
        with self._runs.registered(task, _Run()) as run:
            try:
                return await self._run(task, run)
            finally:
                if run.pid is not None and not run.exited:  # run() itself was cancelled
                    _signal_group(run.pid, signal.SIGKILL)
                if run.escalation is not None:
                    run.escalation.cancel()
                self._record_path(task).unlink(missing_ok=True)
                run.stopped.set()

    async def cancel(self, task: Task) -> None:
        run = self._runs.mark_cancelled(task)
        if run is not None:
            self._stop(run)

    async def wait_stopped(self, task: Task) -> None:
        run = self._runs.get(task)
        if run is not None:
            await run.stopped.wait()

    # One run

    async def _run(self, task: Task, run: _Run) -> Any:
        spec = parse_attributes(CommandTask, task, runtime=self.name)
        executable = self._allowed_executable(spec.command[0])
        bound = log.bind(task_id=str(task.id), scheduler=task.scheduler, attempt=task.attempts)
        tail = OutputTail(self._output_tail)
        try:
            transport, protocol = await asyncio.get_running_loop().subprocess_exec(
                lambda: _CommandProtocol(tail),
                spec.command[0],
                *spec.command[1:],
                executable=executable,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=spec.cwd,
                env=self._environment(task, spec),
                start_new_session=True,
            )
        except OSError as exc:
            if self._runs.is_cancelled(task):
                raise TaskCancelled(str(task.id)) from exc
            raise TaskFailed(f"cannot start {spec.command[0]!r}: {exc}") from exc
        try:
            pid = run.pid = transport.get_pid()
            self._write_record(task, pid)
            bound.info("subprocess.started", pid=pid, executable=executable)
            if self._runs.is_cancelled(task):  # cancel arrived while the process was being started
                self._stop(run)
            timed_out = False
            try:
                async with asyncio.timeout(spec.timeout):
                    await protocol.exited.wait()
            except TimeoutError:
                timed_out = True
                self._stop(run)
                await protocol.exited.wait()
            run.exited = True
            exit_code = transport.get_returncode()
            assert exit_code is not None
            _signal_group(pid, signal.SIGKILL)  # leftovers in its group would hold the pipe open
            with contextlib.suppress(TimeoutError):  # unless one escaped the group (setsid)
                async with asyncio.timeout(self._kill_grace):
                    await protocol.output_closed.wait()
        finally:
            transport.close()
        cancelled = self._runs.is_cancelled(task)
        bound.info("subprocess.exited", pid=pid, exit_code=exit_code, cancelled=cancelled)
        if cancelled:
            raise TaskCancelled(str(task.id))
        output = tail.text()
        if timed_out:
            raise TaskFailed(f"{spec.command[0]} ran longer than its timeout of {spec.timeout} s: {output}")
        if exit_code < 0:
            raise TaskFailed(f"{spec.command[0]} was killed by {signal.strsignal(-exit_code)}: {output}")
        if exit_code != 0:
            raise TaskFailed(f"{spec.command[0]} exited with code {exit_code}: {output}")
        return {"exit_code": exit_code, "output": output, "output_truncated": tail.truncated}

    def _environment(self, task: Task, spec: CommandTask) -> dict[str, str]:
        """A few of the consumer's variables, the task's identity (so a command can name what it
        creates after the task and attempt, and stay safe to repeat), then the task's own env."""
        inherited = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        identity = {"TASKBROKER_TASK_ID": str(task.id), "TASKBROKER_TASK_ATTEMPT": str(task.attempts)}
        return {**inherited, **identity, **spec.env}

    def _stop(self, run: _Run) -> None:
        """SIGTERM the run's group now and SIGKILL it after the grace period, without waiting."""
        pid = run.pid
        if pid is None or run.escalation is not None or run.exited:
            return
        _signal_group(pid, signal.SIGTERM)

        async def escalate() -> None:
            await asyncio.sleep(self._kill_grace)
            if not run.exited:
                _signal_group(pid, signal.SIGKILL)

        run.escalation = asyncio.create_task(escalate())

    def _resolve_allowed(self) -> None:
        for entry in self._executables:
            resolved = self._locate(entry)
            if resolved is None:
                raise RuntimeConfigError(
                    f"executable {entry!r} in option executables is not an absolute path or a "
                    f"command on this consumer's PATH ({self._path})"
                )
            self._allowed[os.path.realpath(resolved)] = entry

    def _locate(self, command: str) -> str | None:
        if os.path.isabs(command):
            return command if os.access(command, os.X_OK) else None
        if os.sep in command:
            return None
        return shutil.which(command, path=self._path)

    def _allowed_executable(self, command: str) -> str:
        """The absolute path to execute, resolved on the consumer's PATH (not the task's env)."""
        resolved = self._locate(command)
        if resolved is None or os.path.realpath(resolved) not in self._allowed:
            allowed = ", ".join(sorted(self._allowed.values())) or "none"
            raise TaskFailed(
                f"{command!r} is not an allowed executable on this consumer (allowed: {allowed}); "
                "the operator allows commands with --option executables=NAME,..."
            )
        return resolved

    # Adoption after a crash

    def _record_path(self, task: Task) -> Path:
        return self._state_dir / f"{task.id}.json"

    def _write_record(self, task: Task, pid: int) -> None:
        record = {"pgid": pid, "started": _start_ticks(pid), "consumer_pid": os.getpid()}
        self._record_path(task).write_text(json.dumps(record))

    def _adopt_orphans(self) -> None:
        """Kill the process groups of runs whose consumer died (SIGKILL, OOM): the broker runs
        those tasks again elsewhere, and the old command must not run on beside the new one."""
        for path in self._state_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                pgid, started, owner = int(record["pgid"]), record["started"], int(record["consumer_pid"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if owner != os.getpid() and _alive(owner):
                continue  # another live consumer of this scheduler on this host owns it
            now = _start_ticks(pgid)
            if now is None or now == started:  # a reused pid would have started at another time
                _signal_group(pgid, signal.SIGKILL)
                log.warning("subprocess.orphan_killed", task_id=path.stem, pgid=pgid, dead_consumer=owner)
            path.unlink(missing_ok=True)
