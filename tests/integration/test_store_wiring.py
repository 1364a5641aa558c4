"""Every store is built once per process, with its Backends: a request only looks one up. A
store built per request would register (and hash) its Lua scripts on every call."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from taskbroker.api.app import create_app
from taskbroker.backends import Backends
from taskbroker.events import EventLog
from taskbroker.rate_windows import RateWindows
from taskbroker.schedule_store import ScheduleStore
from taskbroker.settings import Settings
from taskbroker.store import TaskStore
from taskbroker.tokens import TokenStore
from taskbroker.webhook_store import WebhookDeliveries
from tests.support.inprocess import Api, api_client

SCHEDULER = "wired"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"n": 1}}
STORE_CLASSES: tuple[type, ...] = (
    TaskStore,
    ScheduleStore,
    TokenStore,
    EventLog,
    WebhookDeliveries,
    RateWindows,
)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many stores of each class are built, and Lua scripts registered, from now on."""
    counted: Counter[str] = Counter()

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for cls in STORE_CLASSES:
        monkeypatch.setattr(cls, "__init__", counting(cls.__name__, vars(cls)["__init__"]))
    monkeypatch.setattr(Redis, "register_script", counting("register_script", Redis.register_script))
    return counted


async def _every_router(api: Api) -> None:
    """A request to each router that reaches a store: tasks (scheduling under a rate limit),
    schedulers, schedules, tokens, events, health and metrics."""
    http = api.http
    task = await api.schedule(SCHEDULER, ECHO)
    assert (await http.post("/task/schedule/batch", json={"tasks": [{"scheduler": SCHEDULER}]})).is_success
    assert (await http.get(f"/task/{task['id']}")).is_success
    assert (await http.get("/tasks", params={"scheduler": SCHEDULER})).is_success
    assert (await http.get("/schedulers")).is_success
    assert (await http.get(f"/scheduler/{SCHEDULER}")).is_success
    body = {"name": f"every-minute-{uuid.uuid4().hex[:6]}", "scheduler": SCHEDULER, "cron": "* * * * *"}
    created = await http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    assert (await http.get("/schedules")).is_success
    assert (await http.get(f"/schedules/{schedule_id}")).is_success
    assert (await http.patch(f"/schedules/{schedule_id}", json={"enabled": False})).is_success
    assert (await http.post(f"/schedules/{schedule_id}/run")).status_code == 201
    assert (await http.get(f"/schedules/{schedule_id}/runs")).is_success
    assert (await http.delete(f"/schedules/{schedule_id}")).status_code == 204
    token = await http.post("/token", json={"role": "client"})
    assert token.status_code == 201, token.text
    assert (await http.get("/tokens")).is_success
    assert (await http.delete(f"/token/{token.json()['id']}")).status_code == 204
    assert (await http.get("/ready")).is_success
    assert (await http.get("/metrics")).is_success


async def test_requests_build_no_store_and_register_no_script(
    settings: Settings, real: Backends, builds: Counter[str]
) -> None:
    limited = settings.model_copy(update={"schedule_rate_limit": 1000})
    async with api_client(limited, real) as api:
        await api.register(SCHEDULER)
        builds.clear()  # from here on, only what requests build
        await _every_router(api)
        await _every_router(api)  # a second round: nothing is built lazily on first use either

    assert builds == Counter()


def test_the_api_takes_its_stores_from_the_backends_it_is_given(settings: Settings, real: Backends) -> None:
    app = create_app(settings, real, owns_backends=False)

    assert app.state.tokens is real.tokens
    assert app.state.scheduling_context.rate_windows is real.rate_windows
    assert app.state.backends is real
