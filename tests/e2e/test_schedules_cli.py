"""`taskbroker schedules ...` and `taskbroker schedule-firer` as users run them: real processes
against a real `taskbroker api` on the real servers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.support.processes import Processes, taskbroker_command
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

SCHEDULER = "cli"

FILE = """
schedules:
  - name: nightly
    scheduler: cli
    cron: "30 1 * * *"
    timezone: Europe/Amsterdam
    attributes: {function: taskbroker.runtimes.builtin:echo, kwargs: {report: nightly}}
  - name: twice-a-day
    scheduler: cli
    trigger: interval
    trigger_kwargs: {hours: 12}
    timeout_after: PT1H
"""


def _cli(processes: Processes, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**processes.env, "TASKBROKER_URL": url, "TASKBROKER_TOKEN": ADMIN_TOKEN, "COLUMNS": "250"}
    return subprocess.run(
        [*taskbroker_command(), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _loaded(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}


def test_schedules_load_is_idempotent_and_reports_what_changed(
    processes: Processes, http: httpx.Client, tmp_path: Path
) -> None:
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    declared = tmp_path / "schedules.yaml"
    declared.write_text(FILE)

    assert _loaded(_cli(processes, url, "schedules", "load", str(declared))) == {
        "nightly": "created",
        "twice-a-day": "created",
    }
    assert _loaded(_cli(processes, url, "schedules", "load", str(declared))) == {
        "nightly": "unchanged",
        "twice-a-day": "unchanged",
    }

    # An operator pauses one; the file does not say `enabled`, so loading leaves it paused.
    nightly = next(s for s in http.get(f"{url}/schedules").json() if s["name"] == "nightly")
    assert http.patch(f"{url}/schedules/{nightly['id']}", json={"enabled": False}).status_code == 200
    declared.write_text(FILE.replace('"30 1 * * *"', '"45 1 * * *"'))
    assert _loaded(_cli(processes, url, "schedules", "load", str(declared))) == {
        "nightly": "updated",
        "twice-a-day": "unchanged",
    }
    after = http.get(f"{url}/schedules/{nightly['id']}").json()
    assert after["cron"] == "45 1 * * *"
    assert after["enabled"] is False
    assert len(http.get(f"{url}/schedules").json()) == 2


def test_schedules_load_refuses_an_invalid_file_naming_the_entry(
    processes: Processes, tmp_path: Path
) -> None:
    declared = tmp_path / "bad.yaml"
    declared.write_text("schedules:\n  - name: broken\n    scheduler: cli\n    trigger: hourly\n")
    result = _cli(processes, "http://127.0.0.1:9", "schedules", "load", str(declared))
    assert result.returncode == 2
    assert "broken" in result.stderr


def test_schedule_firer_process_fires_and_cli_lists_and_forces_runs(
    processes: Processes, http: httpx.Client
) -> None:
    _, url = processes.api()
    assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
    body = {"name": "often", "scheduler": SCHEDULER, "trigger": "interval", "trigger_kwargs": {"seconds": 1}}
    schedule = http.post(f"{url}/schedules", json=body).json()
    processes.start("firer", "schedule-firer").wait_for_event("schedule_firer.started")

    eventually_sync(
        lambda: http.get(f"{url}/schedules/{schedule['id']}").json()["runs"] >= 2,
        what="the schedule firer to fire twice",
    )

    listed = _cli(processes, url, "schedules")
    assert listed.returncode == 0, listed.stderr
    assert "often" in listed.stdout
    assert "interval seconds=1" in listed.stdout

    forced = _cli(processes, url, "schedules", "run", schedule["id"])
    assert forced.returncode == 0, forced.stderr
    runs = http.get(f"{url}/schedules/{schedule['id']}/runs").json()
    assert any(r["forced"] for r in runs)
