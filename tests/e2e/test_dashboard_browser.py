"""The dashboard in a real browser (Debian's headless chromium, driven by Playwright) against real
API, consumer, timeout daemon and schedule firer processes on the real servers.

One set of processes serves the whole module (starting them is most of the cost); each test has a
browser context of its own, so nothing of one sign-in is left for the next.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskbroker.settings import Settings
from tests.conftest import ADMIN_HEADERS, ADMIN_TOKEN, AMQP_URL, REDIS_URL, cleanup
from tests.support.blocking_api import BlockingApi
from tests.support.processes import ManagedProcess, Processes, process_env
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for these tests")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

BUILTIN = "taskbroker.runtimes.builtin"
WAIT_MS = 30_000
"""How long a page may take to show what the test waits for: bounds a hung test, no threshold."""
expect.set_options(timeout=WAIT_MS)


@dataclass
class Stack:
    url: str
    api: BlockingApi
    http: httpx.Client
    server: ManagedProcess
    """The `taskbroker api` process (its log is checked for tokens)."""
    worker: ManagedProcess
    scheduler: str
    idle: str
    """A scheduler no consumer serves: its tasks stay pending."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    key_prefix = f"tbtest-{uuid.uuid4().hex[:12]}"
    settings = Settings(redis_url=REDIS_URL, amqp_url=AMQP_URL, key_prefix=key_prefix)
    env = process_env(key_prefix=key_prefix, redis_url=REDIS_URL, amqp_url=AMQP_URL)
    processes = Processes(tmp_path_factory.mktemp("dashboard"), env)
    try:
        with httpx.Client(timeout=30, headers=ADMIN_HEADERS) as http:
            server, url = processes.api()
            api = BlockingApi(http, url)
            api.register("dash")
            api.register("dash-idle")
            worker = processes.worker("worker", "dash", concurrency=2)
            processes.timeout_daemon()
            processes.start("firer", "schedule-firer").wait_for_event("schedule_firer.started")
            yield Stack(url, api, http, server, worker, "dash", "dash-idle")
    finally:
        processes.kill_all()
        # In a thread of its own: Playwright's event loop may still run in this one.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, cleanup(settings)).result()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(WAIT_MS)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, url: str, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{url}/ui")
    page.wait_for_url(f"{url}/ui/sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/ui")


def create_token(stack: Stack, role: str, **extra: Any) -> dict[str, Any]:
    response = stack.http.post(f"{stack.url}/token", json={"role": role, **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def schedule_as(stack: Stack, token: str, scheduler: str, attributes: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.url}/task/schedule",
        json={"scheduler": scheduler, "attributes": attributes},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def test_signing_in_with_a_token_shows_the_overview_listing_every_scheduler(page: Page, stack: Stack) -> None:
    sign_in(page, stack.url)

    rows = page.locator("#schedulers tbody tr[data-scheduler]")
    expect(rows).to_have_count(2)
    expect(page.locator('tr[data-scheduler="dash"] th')).to_contain_text("dash")
    expect(page.locator('tr[data-scheduler="dash-idle"]')).to_contain_text("no consumers")
    expect(page.locator("#identity")).to_have_text("admin · admin")


def test_a_wrong_token_is_refused_and_nothing_is_kept(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/ui/sign-in")
    page.get_by_label("API token").fill("tb_" + "0" * 40)
    page.get_by_role("button", name="Sign in").click()

    expect(page.locator("#sign-in-error")).to_contain_text("not valid")
    assert page.url == f"{stack.url}/ui/sign-in"
    assert page.evaluate("Object.keys(sessionStorage)") == []
    page.goto(f"{stack.url}/ui/tasks")
    page.wait_for_url(f"{stack.url}/ui/sign-in")


def test_a_task_scheduled_through_the_api_appears_and_turns_complete_without_a_reload(
    page: Page, stack: Stack
) -> None:
    sign_in(page, stack.url)
    page.goto(f"{stack.url}/ui/tasks?scheduler={stack.scheduler}")
    expect(page.locator("#live-state")).to_have_text("Live")
    page.evaluate("window.sameDocument = true")

    task = stack.api.schedule(stack.scheduler, {"function": f"{BUILTIN}:sleep", "kwargs": {"seconds": 1}})

    row = page.locator(f'#tasks tr[data-task-id="{task["id"]}"]')
    expect(row).to_be_visible()
    expect(row.locator('[data-field="state"]')).to_have_text("complete")
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"


def test_a_task_is_found_by_its_idempotency_key_with_the_keyboard_alone(page: Page, stack: Stack) -> None:
    response = stack.http.post(
        f"{stack.url}/task/schedule",
        json={"scheduler": stack.idle, "attributes": {"function": f"{BUILTIN}:noop"}, "key": "invoice-4711"},
    )
    assert response.status_code == 201, response.text
    page.goto(f"{stack.url}/ui/sign-in")
    page.keyboard.type(ADMIN_TOKEN)  # the token field has the focus
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.url}/ui")
    page.goto(f"{stack.url}/ui/tasks?scheduler={stack.idle}")
    expect(page.locator("#live-state")).to_have_text("Live")

    page.get_by_label("Find by task id or idempotency key").fill("invoice-4711")
    page.keyboard.press("Enter")

    page.wait_for_url(f"{stack.url}/ui/tasks/{response.json()['id']}")
    expect(page.locator("#fields")).to_contain_text("invoice-4711")


def test_a_running_sleep_task_aborted_from_its_page_is_cancelled_in_its_consumer(
    page: Page, stack: Stack
) -> None:
    task = stack.api.schedule(stack.scheduler, {"function": f"{BUILTIN}:sleep", "kwargs": {"seconds": 600}})
    stack.api.wait_for_state(task["id"], "running")
    sign_in(page, stack.url)
    page.goto(f"{stack.url}/ui/tasks/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept())

    page.get_by_role("button", name="Abort").click()

    expect(page.locator("#task-state")).to_have_text("aborted")
    expect(page.locator('#timeline li[data-state="aborted"]')).to_have_count(1)
    assert stack.api.task(task["id"])["state"] == "aborted"
    eventually_sync(
        lambda: [e for e in stack.worker.events("task.cancelled") if e.get("task_id") == task["id"]],
        what="the consumer to cancel the aborted task's run",
    )


def test_a_failed_task_is_retried_from_its_page_and_runs_again(page: Page, stack: Stack) -> None:
    task = stack.api.schedule(stack.scheduler, {"function": f"{BUILTIN}:fail"})
    assert stack.api.wait_for_state(task["id"])["state"] == "failed"
    sign_in(page, stack.url)
    page.goto(f"{stack.url}/ui/tasks/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("failed")

    page.get_by_role("button", name="Retry").click()

    expect(page.locator('#timeline li[data-state="retried"]')).to_have_count(1)
    expect(page.locator('#timeline li[data-state="failed"]')).to_have_count(2)  # ran again, failed again
    expect(page.locator("#task-state")).to_have_text("failed")
    assert stack.api.task(task["id"])["attempts"] == 2


def test_a_schedule_is_paused_and_run_now_from_the_schedules_page(page: Page, stack: Stack) -> None:
    created = stack.http.post(
        f"{stack.url}/schedules",
        json={
            "name": "dash-hourly",
            "scheduler": stack.scheduler,
            "attributes": {"function": f"{BUILTIN}:echo", "kwargs": {"from": "dashboard"}},
            "trigger": "interval",
            "trigger_kwargs": {"hours": 1},
        },
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    sign_in(page, stack.url)
    page.get_by_role("link", name="Schedules").click()
    row = page.locator('#schedules tr[data-name="dash-hourly"]')
    expect(row.locator('[data-field="enabled"]')).to_have_text("enabled")

    row.get_by_role("button", name="Pause dash-hourly").click()
    expect(row.locator('[data-field="enabled"]')).to_have_text("paused")
    row.get_by_role("button", name="Run now dash-hourly").click()
    notice = page.locator("#notice")
    expect(notice).to_contain_text("dash-hourly ran: task ")

    assert stack.http.get(f"{stack.url}/schedules/{schedule['id']}").json()["enabled"] is False
    match = re.search(r"task ([0-9a-f-]{36})", notice.inner_text())
    assert match is not None
    assert stack.api.wait_for_state(match.group(1))["result"] == {"from": "dashboard"}
    page.get_by_role("link", name="dash-hourly").click()
    expect(page.locator(f'#runs tr[data-task-id="{match.group(1)}"]')).to_contain_text("run now")


def test_a_scheduler_paused_from_the_consumers_page_takes_no_task_until_resumed(
    page: Page, stack: Stack
) -> None:
    sign_in(page, stack.url)
    page.get_by_role("link", name="Consumers").click()
    group = page.locator(f'section[data-scheduler="{stack.scheduler}"]')
    expect(group.locator("tr[data-consumer]")).to_have_count(1)

    group.get_by_role("button", name=f"Pause the scheduler {stack.scheduler}").click()
    expect(group.get_by_role("button", name=f"Resume the scheduler {stack.scheduler}")).to_be_visible()
    eventually_sync(
        lambda: all(c["paused"] for c in stack.http.get(f"{stack.url}/consumers").json()["consumers"]),
        what="every consumer to report paused",
    )
    task = stack.api.schedule(stack.scheduler, {"function": f"{BUILTIN}:noop"})
    assert stack.api.task(task["id"])["state"] == "pending"
    assert stack.api.scheduler(stack.scheduler)["paused"] is True

    group.get_by_role("button", name=f"Resume the scheduler {stack.scheduler}").click()
    assert stack.api.wait_for_state(task["id"])["state"] == "complete"


def test_a_client_token_sees_only_its_own_tasks_and_no_admin_page(page: Page, stack: Stack) -> None:
    mine = create_token(stack, "client", name="dashboard client")
    theirs = create_token(stack, "client", name="another client")
    own = schedule_as(stack, mine["token"], stack.idle, {"function": f"{BUILTIN}:noop"})
    other = schedule_as(stack, theirs["token"], stack.idle, {"function": f"{BUILTIN}:noop"})
    sign_in(page, stack.url, mine["token"])

    page.get_by_role("link", name="Tasks").click()
    expect(page.locator(f'#tasks tr[data-task-id="{own["id"]}"]')).to_be_visible()
    expect(page.locator(f'#tasks tr[data-task-id="{other["id"]}"]')).to_have_count(0)
    for admin_page in ("Schedules", "Tokens", "Consumers"):
        expect(page.get_by_role("link", name=admin_page)).to_have_count(0)
    page.goto(f"{stack.url}/ui/tokens")
    expect(page.locator("#notice")).to_contain_text("needs an admin token")
    expect(page.locator("#tokens")).to_have_count(0)
    page.goto(f"{stack.url}/ui/tasks/{other['id']}")
    expect(page.locator("#notice")).to_contain_text("No such task")


def test_every_page_carries_the_csp_and_requests_nothing_from_another_origin(
    page: Page, stack: Stack
) -> None:
    requested: list[str] = []
    violations: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: violations.append(message.text) if message.type == "error" else None)
    sign_in(page, stack.url)
    task = stack.api.schedule(stack.scheduler, {"function": f"{BUILTIN}:echo"})
    paths = ["/ui", "/ui/tasks", f"/ui/tasks/{task['id']}", "/ui/schedules", "/ui/consumers", "/ui/tokens"]

    policies = []
    for path in paths:
        response = page.goto(f"{stack.url}{path}")
        assert response is not None
        assert response.ok, path
        policies.append(response.headers.get("content-security-policy", ""))
        expect(page.locator("#identity")).to_have_text("admin · admin")

    assert all("script-src 'self'" in policy and "default-src 'none'" in policy for policy in policies)
    foreign = [url for url in requested if not url.startswith(f"{stack.url}/")]
    assert requested
    assert foreign == []
    assert [text for text in violations if "Content Security Policy" in text] == []


def test_the_token_is_in_no_url_the_browser_requests_and_in_no_log_line(page: Page, stack: Stack) -> None:
    client = create_token(stack, "client", name="log check")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page, stack.url, client["token"])
    task = schedule_as(stack, client["token"], stack.scheduler, {"function": f"{BUILTIN}:echo"})
    page.goto(f"{stack.url}/ui/tasks/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("complete")
    page.goto(f"{stack.url}/ui/tasks")
    expect(page.locator("#live-state")).to_have_text("Live")

    secret = client["token"]
    assert requested
    assert [url for url in requested if secret in url or ADMIN_TOKEN in url] == []
    logs = stack.server.stdout() + stack.server.stderr()
    assert secret not in logs
    assert ADMIN_TOKEN not in logs
