"""The README's five-minute tour, run as written: every command of its ```sh blocks, in order,
against real `taskbroker dev` and `taskbroker worker` processes.

Long-running commands (`taskbroker dev`, `taskbroker worker`) become managed processes, as the
reader's extra terminals would be; `export` lines set their environment and the shell's; every
other command runs in bash with `set -e` and must exit 0. The only substitutions are the token
`dev` printed for its placeholder, the port `dev` picked for `localhost:8000`, and the test's
servers and key prefix. A README edit that breaks a command fails this test.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskbroker.settings import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL, Settings
from tests.conftest import AMQP_URL, REDIS_URL, cleanup
from tests.support.processes import REPO_ROOT, ManagedProcess, Processes, process_env
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

README = REPO_ROOT / "README.md"
TOUR_HEADING = "## Five-minute tour"
TOKEN_PLACEHOLDER = "<the token taskbroker dev printed>"
README_URL = "localhost:8000"
SERVERS = {DEFAULT_REDIS_URL: REDIS_URL, DEFAULT_AMQP_URL: AMQP_URL}
"""The servers the README names, and the ones the tests use (the same unless overridden)."""

# `curl -s` exits 0 on a 4xx or 5xx answer; the tour must get none, so make those fail the step.
SHELL_PREAMBLE = """set -euo pipefail
trap 'echo "tour command failed: $BASH_COMMAND" >&2' ERR
curl() { command curl --fail-with-body --max-time 120 "$@"; }
[ -f "$TOUR_STATE" ] && source "$TOUR_STATE"
"""


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def sh_commands(markdown: str) -> list[str]:
    """The commands of the ```sh blocks, continuation lines joined, comment lines left out."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


class Tour:
    """Plays the commands as a reader would, each terminal's process started for real."""

    def __init__(self, processes: Processes, state: Path) -> None:
        self._processes = processes
        self._state = state
        self._pending: list[str] = []
        self._assigned: list[str] = []
        self._dev: ManagedProcess | None = None
        self._workers: list[ManagedProcess] = []
        self.env = dict(processes.env, TOUR_STATE=str(state))
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        self.url = ""
        self.token = ""
        self.output = ""

    def play(self, command: str) -> None:
        if command.startswith("taskbroker dev"):
            self._flush()
            self._start_dev(command.split()[2:])
        elif command.startswith("taskbroker worker"):
            self._flush()
            self._start_worker(command.split()[2:])
        elif command.startswith("export "):
            self._flush()
            name, _, value = command.removeprefix("export ").partition("=")
            value = value.replace(TOKEN_PLACEHOLDER, self.token)
            value = re.sub(r"\$(\w+)", lambda m: self.env[m.group(1)], value)
            self.env[name] = SERVERS.get(value, value)
        else:
            assigned = re.match(r"([A-Za-z_]\w*)=", command)
            if assigned:
                self._assigned.append(assigned.group(1))
            self._pending.append(command.replace(README_URL, self.url.removeprefix("http://")))

    def finish(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        names = " ".join(sorted(set(self._assigned)))
        epilogue = f'declare -p {names} > "$TOUR_STATE"\n' if names else ""
        script = SHELL_PREAMBLE + "\n".join(self._pending) + "\n" + epilogue
        self._pending = []
        done = subprocess.run(
            ["bash", "-c", script], env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
        )
        said = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert done.returncode == 0, f"the tour failed (exit {done.returncode}):\n{script}\n{said}"
        self.output += done.stdout

    def _start_dev(self, args: list[str]) -> None:
        if self._dev is not None:
            self._dev.kill()
        self._dev = self._processes.start("dev", "dev", *args, "--port", "0", env=self.env)
        self.url = self._dev.wait_for_stdout(r"serving at (http://127\.0\.0\.1:\d+) on ").group(1)
        if "TASKBROKER_ADMIN_TOKEN" not in self.env:
            self.token = self._dev.wait_for_stdout(r"Admin token \(generated[^:]*: (\S+)").group(1)
        self.env["TASKBROKER_URL"] = self.url

    def _start_worker(self, args: list[str]) -> None:
        worker = self._processes.start(f"worker-{len(self._workers) + 1}", "worker", *args, env=self.env)
        worker.wait_for_event("consumer.subscribed")
        self._workers.append(worker)
        scheduler = args[args.index("--scheduler") + 1]
        expected = len(self._workers) + 1  # and dev's own consumer

        def consumers() -> bool:
            with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.token}"}) as http:
                attached: object = http.get(f"{self.url}/scheduler/{scheduler}").json().get("consumers")
                return attached == expected

        eventually_sync(consumers, what=f"{expected} consumers of {scheduler}")


@pytest.fixture
def tour(settings: Settings, tmp_path: Path) -> Iterator[Tour]:
    """Starts as the reader does: no servers configured, no admin token chosen."""
    env = process_env(key_prefix=settings.key_prefix, redis_url=None, amqp_url=None)
    env.pop("TASKBROKER_ADMIN_TOKEN")
    processes = Processes(tmp_path, env)
    try:
        yield Tour(processes, tmp_path / "tour-state.sh")
    finally:
        processes.kill_all()
        asyncio.run(cleanup(settings))


def test_the_tour_runs_as_written_and_its_tasks_end_as_it_says(tour: Tour) -> None:
    commands = sh_commands(readme_section(TOUR_HEADING))
    assert commands[0] == f"export TASKBROKER_TOKEN={TOKEN_PLACEHOLDER}", commands

    tour.play("taskbroker dev")  # the README's "Run it" command, already running when the tour begins
    for command in commands:
        tour.play(command)
    tour.finish()

    assert "event: complete" in tour.output, tour.output
    assert re.search(r'"state":\s*"complete",.*"result":\s*\{"hello":\s*"world"\}', tour.output), tour.output
    assert re.search(r'"state":\s*"aborted"', tour.output), tour.output


def test_the_readme_commands_outside_the_tour_exist() -> None:
    """`pip install . && taskbroker dev` and `.ci/run`: the CLI has the command, CI the script."""
    text = README.read_text()
    assert "pip install . && taskbroker dev" in text
    assert "\n.ci/run\n" in text
    ci = REPO_ROOT / ".ci" / "run"
    assert ci.is_file(), f"{ci} is missing"
    assert ci.stat().st_mode & 0o111, f"{ci} is not executable"
    help_text = subprocess.run(
        [str(Path(sys.executable).parent / "taskbroker"), "dev", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--port" in help_text
