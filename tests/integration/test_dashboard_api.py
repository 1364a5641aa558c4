"""What the dashboard reads and how its pages are served: GET /overview from indexes and the event
stream, GET /whoami, GET /tasks/by-key, and the pages' Content-Security-Policy."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from taskbroker.api.dashboard import pages
from taskbroker.backends import Backends
from taskbroker.settings import Settings
from tests.support.inprocess import Api, api_client, running_consumer

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/ui", "/ui/sign-in", "/ui/tasks", "/ui/schedules", "/ui/consumers", "/ui/tokens"]
BUILTIN = "taskbroker.runtimes.builtin"


async def _token(api: Api, role: str, schedulers: list[str] | None = None) -> tuple[str, str]:
    response = await api.http.post("/token", json={"role": role, "schedulers": schedulers})
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["token"]


async def test_overview_counts_waiting_running_and_finished_tasks_per_scheduler(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register("ov")
    await api.register("idle")
    async with running_consumer(settings, backends, "ov"):
        for call in (
            {"function": f"{BUILTIN}:echo"},
            {"function": f"{BUILTIN}:echo"},
            {"function": f"{BUILTIN}:fail"},
        ):
            await api.wait_for_state((await api.schedule("ov", call))["id"])
        sleeper = await api.schedule("ov", {"function": f"{BUILTIN}:sleep", "kwargs": {"seconds": 300}})
        await api.wait_for_state(sleeper["id"], "running")
        running = (await api.http.get("/overview")).json()
        await api.http.post(f"/task/{sleeper['id']}/abort")
        await api.wait_for_state(sleeper["id"])
    await api.schedule("ov", {"function": f"{BUILTIN}:noop"})  # no consumer now: it waits

    waiting = (await api.http.get("/overview")).json()

    rows = {row["name"]: row for row in running["schedulers"]}
    assert set(rows) == {"ov", "idle"}
    assert (rows["ov"]["running"], rows["ov"]["waiting"]) == (1, 0)
    assert (rows["ov"]["completed_5m"], rows["ov"]["failed_5m"]) == (2, 1)
    assert (rows["ov"]["completed_60m"], rows["ov"]["failed_60m"]) == (2, 1)
    assert sum(rows["ov"]["throughput"]) == 3
    assert rows["idle"]["completed_60m"] == 0
    assert rows["idle"]["throughput"] == [0] * 15
    after = {row["name"]: row for row in waiting["schedulers"]}["ov"]
    assert (after["running"], after["waiting"]) == (0, 1)


async def test_overview_lists_only_the_schedulers_a_limited_token_may_use(
    real_api: Api, settings: Settings, real: Backends
) -> None:
    await real_api.register("mine")
    await real_api.register("theirs")
    _, token = await _token(real_api, "client", ["mine"])

    async with api_client(settings, real, headers={"Authorization": f"Bearer {token}"}) as client:
        answer = await client.http.get("/overview")

    assert [row["name"] for row in answer.json()["schedulers"]] == ["mine"]


async def test_whoami_names_the_callers_role_and_schedulers(
    real_api: Api, settings: Settings, real: Backends
) -> None:
    token_id, token = await _token(real_api, "worker", ["b", "a"])
    async with api_client(settings, real, headers={"Authorization": f"Bearer {token}"}) as worker:
        me = (await worker.http.get("/whoami")).json()
    async with api_client(settings, real, headers={"Authorization": "Bearer tb_not-a-token"}) as nobody:
        refused = await nobody.http.get("/whoami")

    assert me == {"token_id": token_id, "role": "worker", "schedulers": ["a", "b"]}
    assert (await real_api.http.get("/whoami")).json()["role"] == "admin"
    assert refused.status_code == 401


async def test_a_live_task_is_found_by_its_idempotency_key_by_its_own_token_only(
    real_api: Api, settings: Settings, real: Backends
) -> None:
    await real_api.register("keys")
    owner_id, owner = await _token(real_api, "client")
    _, other = await _token(real_api, "client")
    async with api_client(settings, real, headers={"Authorization": f"Bearer {owner}"}) as client:
        scheduled = await client.http.post(
            "/task/schedule",
            json={"scheduler": "keys", "attributes": {"function": f"{BUILTIN}:noop"}, "key": "order-17"},
        )
        task = scheduled.json()
        found = await client.http.get("/tasks/by-key", params={"scheduler": "keys", "key": "order-17"})
    async with api_client(settings, real, headers={"Authorization": f"Bearer {other}"}) as stranger:
        named = await stranger.http.get(
            "/tasks/by-key", params={"scheduler": "keys", "key": "order-17", "owner": owner_id}
        )
    by_admin = await real_api.http.get(
        "/tasks/by-key", params={"scheduler": "keys", "key": "order-17", "owner": owner_id}
    )
    unknown = await real_api.http.get("/tasks/by-key", params={"scheduler": "keys", "key": "nope"})

    assert found.status_code == 200
    assert found.json()["id"] == task["id"]
    assert named.status_code == 404  # a client's lookup never reaches another client's keys
    assert by_admin.json()["id"] == task["id"]
    assert unknown.status_code == 404
    assert "detail" in unknown.json()


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_styles = 0
        self.handlers: list[str] = []
        self.style_elements = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self.scripts.append(names)
        if tag == "style":
            self.style_elements += 1
        if "style" in names:
            self.inline_styles += 1
        self.handlers += [name for name in names if name.startswith("on")]


@pytest.mark.parametrize("path", PAGES)
async def test_each_page_is_served_without_a_token_under_a_csp_with_no_inline_script(
    path: str, settings: Settings, embedded: Backends
) -> None:
    async with api_client(settings, embedded, headers={}) as anonymous:
        response = await anonymous.http.get(path)

    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "http" not in policy
    markup = _Markup()
    markup.feed(response.text)
    assert markup.scripts
    assert all((script.get("src") or "").startswith("/ui/static/") for script in markup.scripts)
    assert (markup.inline_styles, markup.style_elements, markup.handlers) == (0, 0, [])


async def test_only_the_dashboards_own_files_are_served(settings: Settings, embedded: Backends) -> None:
    async with api_client(settings, embedded, headers={}) as anonymous:
        script = await anonymous.http.get("/ui/static/js/api.js")
        outside = await anonymous.http.get("/ui/static/../pages.py")
        template = await anonymous.http.get("/ui/static/../templates/base.html")
        unknown_task_page = await anonymous.http.get("/ui/tasks/not-a-uuid")

    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "content-security-policy" in script.headers
    assert outside.status_code == 404
    assert template.status_code == 404
    assert unknown_task_page.status_code == 422
    assert "detail" in unknown_task_page.json()


def test_the_wheel_declares_every_dashboard_file_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["taskbroker.api.dashboard"]
    here = Path(pages.__file__).parent
    shipped = {p for pattern in globs for p in here.glob(pattern)}
    files = {p for p in here.rglob("*") if p.is_file() and not re.search(r"\.pyc?$", p.name)}
    assert files <= shipped, (
        f"not in package-data: {sorted(str(p.relative_to(here)) for p in files - shipped)}"
    )
