"""Screenshots of every dashboard page for the docs: starts `taskbroker dev` (embedded servers),
gives it sample work (tasks that complete, fail, run and wait, schedules, tokens) in a few waves
so the throughput chart has some history, then writes one PNG per page to docs/images/.

    .venv/bin/python -m bench.screenshots            # about two minutes (the waves)
    .venv/bin/python -m bench.screenshots --waves 1  # quicker, a flatter chart

Needs Debian's chromium (/usr/bin/chromium) and Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from bench.harness import BIN, REPO, free_port, progress, wait_until

IMAGES = REPO / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
BUILTIN = "taskbroker.runtimes.builtin"
WIDTH, HEIGHT = 1280, 820


class Sample:
    """The sample work, through the public API as any client would send it."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def schedule(self, scheduler: str, function: str, **kwargs: Any) -> str:
        body = {"scheduler": scheduler, "attributes": {"function": f"{BUILTIN}:{function}", "kwargs": kwargs}}
        task_id: str = self.post("/task/schedule", body)["id"]
        return task_id

    def setup(self) -> None:
        for name, description in (("emails", "Outgoing mail"), ("reports", "Nightly reports")):
            self.post("/scheduler", {"name": name, "description": description})
        for role, name, schedulers in (
            ("client", "billing-service", ["default"]),
            ("client", "web-frontend", None),
            ("worker", "reports-fleet", ["reports"]),
        ):
            self.post("/token", {"role": role, "name": name, "schedulers": schedulers})
        for name, trigger, kwargs in (
            ("nightly-report", "cron", {"hour": 1, "minute": 30}),
            ("hourly-digest", "interval", {"hours": 1}),
            ("cache-warmup", "interval", {"minutes": 15}),
        ):
            self.post(
                "/schedules",
                {
                    "name": name,
                    "scheduler": "default",
                    "attributes": {"function": f"{BUILTIN}:echo", "kwargs": {"job": name}},
                    "trigger": trigger,
                    "trigger_kwargs": kwargs,
                },
            )

    def wave(self, size: int) -> list[str]:
        """Tasks that complete, and one in nine that fails: the ids of those that fail."""
        failing = []
        for index in range(size):
            if index % 9 == 8:
                failing.append(
                    self.schedule("default", "fail", message="upstream returned 503 Service Unavailable")
                )
            else:
                self.schedule("default", "echo", invoice=1000 + index, status="sent")
        return failing


def start_dev(port: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBROKER_")}
    env |= {"TASKBROKER_ADMIN_TOKEN": token, "TASKBROKER_LOG_FORMAT": "json"}
    with log.open("wb") as output:
        return subprocess.Popen(
            [str(BIN / "taskbroker"), "dev", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def shoot(page: Page, url: str, name: str, ready: str, *, full: bool = True) -> None:
    page.goto(url)
    page.wait_for_selector(ready)
    page.wait_for_timeout(600)  # the live stream's first events and the chart's drawing
    path = IMAGES / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=full)
    progress(f"wrote {path.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=4, help="bursts of sample tasks, 30 s apart")
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)
    token = f"screenshots-{secrets.token_hex(16)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = start_dev(port, token, Path(tempfile.mkdtemp(prefix="screenshots-")) / "dev.log")
    try:
        wait_until(lambda: _answers(url), what="taskbroker dev to answer", timeout=60)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            sample = Sample(http)
            sample.setup()
            failing: list[str] = []
            for wave in range(args.waves):
                progress(f"sample wave {wave + 1} of {args.waves}")
                failing += sample.wave(12 + 7 * wave)
                if wave < args.waves - 1:
                    time.sleep(30)
            running = sample.schedule("default", "sleep", seconds=900)
            sample.schedule("default", "sleep", seconds=900)
            for index in range(6):
                sample.schedule("reports", "echo", report=f"region-{index}")
            wait_until(
                lambda: http.get(f"/task/{running}").json()["state"] == "running", what="a running task"
            )
            schedules = http.get("/schedules").json()
            http.post(f"/schedules/{schedules[0]['id']}/run").raise_for_status()
            http.patch(f"/schedules/{schedules[-1]['id']}", json={"enabled": False}).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
            shoot(page, f"{url}/ui/sign-in", "sign-in", "#token", full=False)
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/ui")
            shoot(page, f"{url}/ui", "overview", "#schedulers tr[data-scheduler]")
            shoot(page, f"{url}/ui/tasks", "tasks", "#tasks tr[data-task-id]")
            shoot(page, f"{url}/ui/tasks/{failing[-1]}", "task", '#timeline li[data-state="failed"]')
            shoot(page, f"{url}/ui/schedules", "schedules", "#schedules tr[data-schedule-id]")
            page.goto(f"{url}/ui/schedules")
            page.wait_for_selector("#schedules tr[data-schedule-id] a")
            schedule_link = page.locator("#schedules tr[data-schedule-id] th a").first.get_attribute("href")
            shoot(page, f"{url}{schedule_link}", "schedule", "#runs tr[data-task-id]")
            shoot(page, f"{url}/ui/consumers", "consumers", "#groups section")
            shoot(page, f"{url}/ui/tokens", "tokens", "#tokens tr[data-token-id]")
            page.set_viewport_size({"width": 420, "height": 860})
            shoot(page, f"{url}/ui/tasks", "tasks-narrow", "#tasks tr[data-task-id]", full=False)
            browser.close()
    finally:
        dev.terminate()  # it drains: the sample's long sleeps are cancelled after its grace time
        try:
            dev.wait(timeout=15)
        except subprocess.TimeoutExpired:
            dev.kill()  # embedded servers: nothing is kept anyway
            dev.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
