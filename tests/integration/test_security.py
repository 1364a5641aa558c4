"""Who may do what: tokens, roles, scheduler lists, owners; and the input limits. Runs on the
real servers (tokens live in Redis under the test's prefix)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from taskbroker.api.app import create_app
from taskbroker.backends import Backends, embedded_backends
from taskbroker.models import utcnow
from taskbroker.settings import Settings
from taskbroker.token_models import Role
from taskbroker.tokens import TokenStore
from tests.support.hostile_inputs import DATETIME_FIELDS, FREE_FORM_JSON, NON_FINITE, OVERFLOWING_TIMES
from tests.support.processes import process_env, taskbroker_command

UNKNOWN_ID = "0b9a2f3e-55f4-4c41-9a43-7c1d1e6f0a11"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"x": 1}}
PROTECTED = [
    ("POST", "/scheduler"),
    ("GET", "/schedulers"),
    ("GET", "/scheduler/alpha"),
    ("DELETE", "/scheduler/alpha"),
    ("POST", "/task/schedule"),
    ("POST", "/task/schedule/batch"),
    ("GET", f"/task/{uuid.uuid4()}"),
    ("GET", "/tasks"),
    ("POST", f"/task/{uuid.uuid4()}/abort"),
    ("POST", "/token"),
    ("GET", "/tokens"),
    ("DELETE", "/token/0123456789ab"),
    ("GET", "/ready"),
]


class Caller:
    """One HTTP client per token over the same app."""

    def __init__(self, app: Any, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers
        )

    async def schedule(self, scheduler: str, **extra: Any) -> httpx.Response:
        return await self.http.post(
            "/task/schedule", json={"scheduler": scheduler, "attributes": ECHO, **extra}
        )


class Callers:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        assert settings.admin_token is not None
        self.admin = Caller(app, settings.admin_token.get_secret_value())
        self._opened = [self.admin]

    def with_token(self, token: str | None) -> Caller:
        caller = Caller(self.app, token)
        self._opened.append(caller)
        return caller

    async def token(self, role: str, **fields: Any) -> dict[str, Any]:
        response = await self.admin.http.post("/token", json={"role": role, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def as_new(self, role: str, **fields: Any) -> Caller:
        return self.with_token((await self.token(role, **fields))["token"])

    async def close(self) -> None:
        for caller in self._opened:
            await caller.http.aclose()


@pytest.fixture
async def callers(settings: Settings, real: Backends) -> AsyncIterator[Callers]:
    app = create_app(settings, real, owns_backends=False)
    made = Callers(app, settings)
    for name in ("alpha", "beta"):
        response = await made.admin.http.post("/scheduler", json={"name": name})
        assert response.status_code == 201, response.text
    yield made
    await made.close()


# Authentication


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_endpoint_but_health_refuses_a_request_without_a_token(
    callers: Callers, method: str, path: str
) -> None:
    response = await callers.with_token(None).http.request(method, path)

    assert response.status_code == 401, response.text
    assert "Authorization: Bearer" in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["nonsense", "tb_0123456789ab_secret", "Basic abc"])
async def test_an_invalid_token_is_401(callers: Callers, token: str) -> None:
    response = await callers.with_token(token).http.get("/schedulers")

    assert response.status_code == 401
    assert "invalid token" in response.json()["detail"]


async def test_a_token_with_the_right_id_but_a_wrong_secret_is_401(callers: Callers) -> None:
    created = await callers.token("admin")
    forged = f"tb_{created['id']}_{'A' * 43}"

    assert (await callers.with_token(forged).http.get("/schedulers")).status_code == 401


PROBES = ("/health", "/healthz", "/readyz")
"""Liveness and readiness as probes ask them: a Kubernetes probe sends no token."""


def _every_operation_but_health() -> list[tuple[str, str]]:
    """Each method and path of the app's schema, path parameters filled with "x" (the token is
    checked before the path is validated). Read from the app itself, so a route added later
    without a token check fails here; the docs routes, not in the schema, are tested below."""
    schema = create_app(Settings(), embedded_backends(Settings())).openapi()
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in schema["paths"].items()
        if path not in PROBES
        for method in operations
    )


@pytest.mark.parametrize(("method", "path"), _every_operation_but_health())
async def test_every_operation_in_the_schema_but_health_refuses_a_request_without_a_token(
    callers: Callers, method: str, path: str
) -> None:
    response = await callers.with_token(None).http.request(method, path)

    assert response.status_code == 401, response.text


@pytest.mark.parametrize("path", PROBES)
async def test_health_and_the_probe_paths_need_no_token(callers: Callers, path: str) -> None:
    assert (await callers.with_token(None).http.get(path)).status_code == 200


async def test_a_revoked_token_is_refused_at_once(callers: Callers) -> None:
    created = await callers.token("client")
    client = callers.with_token(created["token"])
    assert (await client.schedule("alpha")).status_code == 201

    assert (await callers.admin.http.delete(f"/token/{created['id']}")).status_code == 204

    assert (await client.schedule("alpha")).status_code == 401
    assert (await callers.admin.http.delete(f"/token/{created['id']}")).status_code == 404


async def test_an_expired_token_is_refused(callers: Callers, settings: Settings, real: Backends) -> None:
    tokens = TokenStore(real.store.redis, settings.key_prefix, admin_token=None)
    _, token = await tokens.create(role=Role.CLIENT, expires_at=utcnow() - timedelta(seconds=1))

    assert (await callers.with_token(token).schedule("alpha")).status_code == 401


async def test_a_token_cannot_be_created_already_expired(callers: Callers) -> None:
    response = await callers.admin.http.post(
        "/token", json={"role": "client", "expires_at": (utcnow() - timedelta(minutes=1)).isoformat()}
    )
    assert response.status_code == 422


async def test_a_token_is_shown_once_and_stored_only_as_a_hash(
    callers: Callers, settings: Settings, real: Backends
) -> None:
    created = await callers.token("client", name="billing", schedulers=["alpha"])
    secret = created["token"].split("_", 2)[2]

    listed = (await callers.admin.http.get("/tokens")).json()
    stored = await real.store.redis.hgetall(f"{settings.key_prefix}:tokens")

    (entry,) = [t for t in listed if t["id"] == created["id"]]
    assert entry == {k: v for k, v in created.items() if k != "token"}
    assert "token" not in entry
    assert "secret_sha256" not in entry
    assert secret not in str(stored)
    assert len(secret) >= 43  # 32 random bytes, base64url: 256 bits


# Roles and scheduler lists


async def test_a_client_may_not_manage_schedulers_or_tokens(callers: Callers) -> None:
    client = await callers.as_new("client")

    for method, path, body in [
        ("POST", "/scheduler", {"name": "gamma"}),
        ("DELETE", "/scheduler/alpha", None),
        ("POST", "/token", {"role": "admin"}),
        ("GET", "/tokens", None),
    ]:
        response = await client.http.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "role" in response.json()["detail"]


async def test_a_worker_token_reads_but_never_schedules_or_aborts(callers: Callers) -> None:
    task = (await callers.admin.schedule("alpha")).json()
    worker = await callers.as_new("worker")

    assert (await worker.http.get(f"/task/{task['id']}")).status_code == 200
    assert (await worker.http.get("/schedulers")).status_code == 200
    assert (await worker.schedule("alpha")).status_code == 403
    assert (await worker.http.post(f"/task/{task['id']}/abort")).status_code == 403


async def test_a_token_limited_to_a_scheduler_may_use_only_that_one(callers: Callers) -> None:
    client = await callers.as_new("client", schedulers=["alpha"])

    assert (await client.schedule("alpha")).status_code == 201
    refused = await client.schedule("beta")
    batch = await client.http.post(
        "/task/schedule/batch",
        json={
            "tasks": [{"scheduler": "alpha", "attributes": ECHO}, {"scheduler": "beta", "attributes": ECHO}]
        },
    )
    listed = [s["name"] for s in (await client.http.get("/schedulers")).json()]

    assert refused.status_code == 403
    assert "beta" in refused.json()["detail"]
    assert batch.status_code == 403
    assert listed == ["alpha"]
    assert (await client.http.get("/scheduler/beta")).status_code == 403


# Visibility: one rule for every read path and role


TASK_PATHS = [
    ("GET", "/task/{task_id}"),
    ("GET", "/task/{task_id}/events"),
    ("POST", "/task/{task_id}/abort"),
]
VIEWERS: dict[str, dict[str, Any]] = {
    "worker of alpha": {"role": "worker", "schedulers": ["alpha"]},
    "client of alpha": {"role": "client", "schedulers": ["alpha"]},
    "client of every scheduler": {"role": "client"},
}


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize(("method", "path"), TASK_PATHS)
async def test_a_task_the_token_may_not_see_is_a_404_like_an_unknown_one(
    callers: Callers, viewer: str, method: str, path: str
) -> None:
    hidden = (await callers.admin.schedule("beta")).json()["id"]
    unknown = str(uuid.uuid4())
    caller = await callers.as_new(**VIEWERS[viewer])

    answers = [await caller.http.request(method, path.format(task_id=i)) for i in (hidden, unknown)]

    if viewer == "worker of alpha" and method == "POST":
        assert [a.status_code for a in answers] == [403, 403]  # no worker aborts: the role says so
        return
    assert [a.status_code for a in answers] == [404, 404], answers[0].text
    assert answers[0].json()["detail"].replace(hidden, "ID") == answers[1].json()["detail"].replace(
        unknown, "ID"
    )


@pytest.mark.parametrize("viewer", ["worker of alpha", "client of alpha"])
async def test_a_scoped_token_lists_only_the_tasks_it_may_see(callers: Callers, viewer: str) -> None:
    caller = await callers.as_new(**VIEWERS[viewer])
    hidden = (await callers.admin.schedule("beta")).json()["id"]
    seen = (await (caller if viewer.startswith("client") else callers.admin).schedule("alpha")).json()["id"]

    listed = await caller.http.get("/tasks")

    assert listed.status_code == 200
    ids = {t["id"] for t in listed.json()["tasks"]}
    assert seen in ids
    assert hidden not in ids


FOREIGN_SCHEDULER_READS = [
    "/scheduler/beta",
    "/scheduler/gamma",
    "/tasks?scheduler=beta",
    "/tasks?scheduler=gamma",
    "/events?scheduler=beta",
    "/events?scheduler=gamma",
]


@pytest.mark.parametrize("viewer", ["worker of alpha", "client of alpha"])
@pytest.mark.parametrize("path", FOREIGN_SCHEDULER_READS)
async def test_naming_a_scheduler_outside_the_tokens_list_is_403_whether_it_exists_or_not(
    callers: Callers, viewer: str, path: str
) -> None:
    await callers.admin.schedule("beta")
    caller = await callers.as_new(**VIEWERS[viewer])

    response = await caller.http.get(path)

    assert response.status_code == 403, response.text
    assert "may not use the scheduler" in response.json()["detail"]


async def test_metrics_covering_every_scheduler_are_refused_to_a_scoped_worker(callers: Callers) -> None:
    scoped = await callers.as_new("worker", schedulers=["alpha"])
    unscoped = await callers.as_new("worker")

    refused = await scoped.http.get("/metrics")

    assert refused.status_code == 403
    assert "every scheduler" in refused.json()["detail"]
    assert (await unscoped.http.get("/metrics")).status_code == 200


# Admin tokens are never limited to schedulers


@pytest.mark.parametrize("schedulers", [["alpha"], []])
async def test_an_admin_token_with_a_scheduler_list_is_refused(
    callers: Callers, schedulers: list[str]
) -> None:
    response = await callers.admin.http.post("/token", json={"role": "admin", "schedulers": schedulers})

    assert response.status_code == 422, response.text
    assert "admin" in response.json()["detail"][0]["msg"]
    assert all(t["role"] != "admin" for t in (await callers.admin.http.get("/tokens")).json())


async def test_a_stored_admin_token_with_a_scheduler_list_is_not_accepted(
    callers: Callers, settings: Settings, real: Backends
) -> None:
    """As an older version stored one: refused, rather than trusted with every scheduler."""
    created = await callers.token("worker", schedulers=["alpha"])
    key = f"{settings.key_prefix}:tokens"
    stored = await real.store.redis.hget(key, created["id"])
    assert stored is not None
    record = json.loads(stored)
    await real.store.redis.hset(key, created["id"], json.dumps({**record, "role": "admin"}))

    response = await callers.with_token(created["token"]).http.delete("/scheduler/beta")

    assert response.status_code == 401
    assert (await callers.admin.http.get("/scheduler/beta")).status_code == 200


async def test_the_cli_refuses_an_admin_token_with_a_scheduler(settings: Settings, real: Backends) -> None:
    env = process_env(key_prefix=settings.key_prefix, redis_url=settings.redis_url, amqp_url=None)
    refused = await _cli(env, "token", "create", "--role", "admin", "--scheduler", "alpha")
    accepted = await _cli(env, "token", "create", "--role", "worker", "--scheduler", "alpha")

    assert refused[0] == 2
    assert "admin" in refused[1]
    assert accepted[0] == 0, accepted[1]
    stored = await real.store.redis.hvals(f"{settings.key_prefix}:tokens")
    assert [json.loads(r)["role"] for r in stored] == ["worker"]


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The exit code and stderr of one `taskbroker` command."""
    process = await asyncio.create_subprocess_exec(
        *taskbroker_command(), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


# Owners


async def test_a_client_sees_and_aborts_only_its_own_tasks(callers: Callers) -> None:
    alice_token = await callers.token("client", name="alice")
    alice = callers.with_token(alice_token["token"])
    bob = await callers.as_new("client", name="bob")
    task = (await alice.schedule("alpha")).json()
    assert task["owner"] == alice_token["id"]

    assert (await bob.http.get(f"/task/{task['id']}")).status_code == 404
    assert (await bob.http.post(f"/task/{task['id']}/abort")).status_code == 404
    assert task["id"] not in {t["id"] for t in (await bob.http.get("/tasks")).json()["tasks"]}
    assert (await alice.http.get(f"/task/{task['id']}")).json()["state"] == "pending"
    assert task["id"] in {t["id"] for t in (await alice.http.get("/tasks")).json()["tasks"]}
    assert (await callers.admin.http.get(f"/task/{task['id']}")).status_code == 200

    aborted = await alice.http.post(f"/task/{task['id']}/abort")
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "aborted"


# Input limits


@pytest.mark.parametrize(
    "path",
    [
        "/tasks?cursor=99999999999999999999:0",
        "/tasks?cursor=18446744073709551616",
        "/tasks?cursor=1:9999999999",
        "/tasks?limit=99999999999999999999",
        "/tasks?limit=0",
        f"/schedules/{UNKNOWN_ID}/runs?limit=99999999999999999999",
        f"/task/{UNKNOWN_ID}/events?after=99999999999999999999-0",
    ],
)
async def test_a_query_value_out_of_range_is_a_422(callers: Callers, path: str) -> None:
    response = await callers.admin.http.get(path)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "query"


async def test_a_body_over_the_size_limit_is_413(callers: Callers, settings: Settings) -> None:
    padding = "x" * (settings.max_body_bytes + 1)
    response = await callers.admin.http.post(
        "/task/schedule", json={"scheduler": "alpha", "attributes": {"blob": padding}}
    )

    assert response.status_code == 413
    assert "request body over" in response.json()["detail"]


async def test_a_streamed_body_over_the_size_limit_is_413(callers: Callers, settings: Settings) -> None:
    chunk = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            yield chunk

    response = await callers.admin.http.post(
        "/task/schedule", content=body(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_attributes_over_the_size_limit_are_422(callers: Callers, settings: Settings) -> None:
    response = await callers.admin.schedule("alpha", attributes={"blob": "x" * settings.max_attributes_bytes})

    assert response.status_code == 422
    assert "bytes of JSON" in response.json()["detail"][0]["msg"]


async def test_attributes_nested_too_deep_are_422(callers: Callers, settings: Settings) -> None:
    nested: dict[str, Any] = {}
    for _ in range(settings.max_attributes_depth):
        nested = {"a": nested}

    response = await callers.admin.schedule("alpha", attributes=nested)

    assert response.status_code == 422
    assert "nested" in response.json()["detail"][0]["msg"]


async def test_json_nested_deeper_than_the_parser_goes_is_a_4xx_not_500(callers: Callers) -> None:
    depth = 100_000
    body = '{"scheduler": "alpha", "attributes": {"a": ' + "[" * depth + "]" * depth + "}}"

    response = await callers.admin.http.post(
        "/task/schedule", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert "detail" in response.json()


async def test_a_timeout_more_than_seven_days_ahead_is_422(callers: Callers) -> None:
    response = await callers.admin.schedule("alpha", timeout=(utcnow() + timedelta(days=8)).isoformat())

    assert response.status_code == 422
    assert "ahead" in response.json()["detail"][0]["msg"]


async def test_scheduling_over_the_rate_limit_is_429_with_retry_after(
    settings: Settings, real: Backends
) -> None:
    limited = settings.model_copy(update={"schedule_rate_limit": 5})
    app = create_app(limited, real, owns_backends=False)
    callers = Callers(app, limited)
    try:
        assert (await callers.admin.http.post("/scheduler", json={"name": "alpha"})).status_code == 201
        client = await callers.as_new("client")
        batch = {"tasks": [{"scheduler": "alpha", "attributes": ECHO}] * 4}
        assert (await client.http.post("/task/schedule/batch", json=batch)).status_code == 201
        assert (await client.schedule("alpha")).status_code == 201

        refused = await client.schedule("alpha")
        other_token = await (await callers.as_new("client")).schedule("alpha")
    finally:
        await callers.close()

    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert "per minute" in refused.json()["detail"]
    assert other_token.status_code == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/task/schedule", '{"scheduler": "alpha", "attributes": {"k": "\\ud800"}}'),
        ("/task/schedule", '{"scheduler": "alpha", "attributes": {"\\udfff": 1}}'),
        ("/scheduler", '{"name": "gamma", "description": "\\ud83d"}'),
        ("/token", '{"role": "client", "name": "\\udc00x"}'),
    ],
)
async def test_text_with_a_lone_surrogate_is_422_not_500(callers: Callers, path: str, body: str) -> None:
    response = await callers.admin.http.post(path, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text


async def test_a_surrogate_pair_is_ordinary_text(callers: Callers) -> None:
    body = '{"scheduler": "alpha", "attributes": {"emoji": "\\ud83d\\ude00"}}'
    response = await callers.admin.http.post(
        "/task/schedule", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["attributes"] == {"emoji": "\N{GRINNING FACE}"}


# The API's own documentation (TASKBROKER_API_DOCS)

API_DOCS = [
    pytest.param("/openapi.json", "application/json", id="openapi.json"),
    pytest.param("/docs", "text/html", id="docs"),
    pytest.param("/redoc", "text/html", id="redoc"),
]


@pytest.mark.parametrize(("path", "content_type"), API_DOCS)
async def test_api_docs_need_a_token_by_default(callers: Callers, path: str, content_type: str) -> None:
    anonymous = await callers.with_token(None).http.get(path)
    worker = await (await callers.as_new("worker")).http.get(path)

    assert anonymous.status_code == 401
    assert "Authorization: Bearer" in anonymous.json()["detail"]
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith(content_type)


@pytest.mark.parametrize(("path", "content_type"), API_DOCS)
async def test_api_docs_set_public_need_no_token(
    settings: Settings, real: Backends, path: str, content_type: str
) -> None:
    public = create_app(settings.model_copy(update={"api_docs": "public"}), real, owns_backends=False)
    callers = Callers(public, settings)
    try:
        response = await callers.with_token(None).http.get(path)
        scheduling = await callers.with_token(None).schedule("alpha")
    finally:
        await callers.close()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert scheduling.status_code == 401


@pytest.mark.parametrize(("path", "content_type"), API_DOCS)
async def test_api_docs_set_off_are_not_served_even_to_an_admin(
    settings: Settings, real: Backends, path: str, content_type: str
) -> None:
    off = create_app(settings.model_copy(update={"api_docs": "off"}), real, owns_backends=False)
    callers = Callers(off, settings)
    try:
        response = await callers.admin.http.get(path)
    finally:
        await callers.close()

    assert response.status_code == 404


async def test_the_served_schema_is_the_apps_schema_without_the_docs_routes(callers: Callers) -> None:
    served = (await callers.admin.http.get("/openapi.json")).json()

    assert served == callers.app.openapi()
    assert not {"/openapi.json", "/docs", "/redoc"} & set(served["paths"])


# Values outside what can be stored or computed with: every field, every path


async def _a_schedule(callers: Callers) -> str:
    response = await callers.admin.http.post(
        "/schedules", json={"name": "base", "scheduler": "alpha", "cron": "0 1 * * *"}
    )
    assert response.status_code == 201, response.text
    schedule_id: str = response.json()["id"]
    return schedule_id


@pytest.mark.parametrize("when", OVERFLOWING_TIMES)
@pytest.mark.parametrize(("method", "path", "body", "loc"), DATETIME_FIELDS)
async def test_a_datetime_outside_the_documented_range_is_422_naming_the_field_and_range(
    callers: Callers, method: str, path: str, body: Any, loc: tuple[Any, ...], when: str
) -> None:
    if "{id}" in path:
        path = path.format(id=await _a_schedule(callers))

    response = await callers.admin.http.request(method, path, json=body(when))

    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert tuple(error["loc"]) == loc
    assert "1970-01-01T00:00:00Z" in error["msg"], error
    assert "9000-01-01T00:00:00Z" in error["msg"], error


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"trigger": "cron", "trigger_kwargs": {"year": "9999"}}, ("body", "trigger_kwargs")),
        (
            {"trigger": "interval", "trigger_kwargs": {"seconds": 1e300}},
            ("body", "trigger_kwargs", "seconds"),
        ),
        ({"trigger": "interval", "trigger_kwargs": {"weeks": 10**30}}, ("body", "trigger_kwargs", "weeks")),
        ({"timeout_after": "P999999999D"}, ("body", "timeout_after")),
        ({"timeout_after": 1e300}, ("body", "timeout_after")),
        ({"timeout_after": 10**30}, ("body", "timeout_after")),
    ],
)
async def test_a_duration_or_fire_time_too_far_ahead_is_422(
    callers: Callers, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    trigger = {} if "trigger" in body else {"cron": "0 1 * * *"}
    spec = {"name": "far", "scheduler": "alpha", **trigger, **body}

    response = await callers.admin.http.post("/schedules", json=spec)

    assert response.status_code == 422, response.text
    assert tuple(response.json()["detail"][0]["loc"]) == loc


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(("method", "path", "template", "loc"), FREE_FORM_JSON)
async def test_a_number_json_cannot_carry_is_422_never_stored_as_null(
    callers: Callers, method: str, path: str, template: str, loc: tuple[str, ...], value: str
) -> None:
    if "{id}" in path:
        path = path.format(id=await _a_schedule(callers))

    body = template.replace("VALUE", value)
    response = await callers.admin.http.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert tuple(response.json()["detail"][0]["loc"]) == loc


CRON = {"name": "n", "scheduler": "alpha", "cron": "0 1 * * *"}
CRON_KWARGS = {"name": "n", "scheduler": "alpha", "trigger": "cron"}


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("POST", "/task/schedule", {"scheduler": "alpha", "priority": "9"}, ("body", "priority")),
        ("POST", "/task/schedule", {"scheduler": "alpha", "priority": True}, ("body", "priority")),
        ("POST", "/task/schedule", {"scheduler": "alpha", "priority": 9.0}, ("body", "priority")),
        (
            "POST",
            "/task/schedule/batch",
            {"tasks": [{"scheduler": "alpha", "priority": "1"}]},
            ("body", "tasks", 0, "priority"),
        ),
        ("POST", "/schedules", {**CRON, "enabled": "true"}, ("body", "enabled")),
        ("POST", "/schedules", {**CRON, "no_overlap": 1}, ("body", "no_overlap")),
        ("PATCH", "/schedules/{id}", {"enabled": "false"}, ("body", "enabled")),
        ("PATCH", "/schedules/{id}", {"no_overlap": 0}, ("body", "no_overlap")),
        ("POST", "/scheduler", {"name": 12}, ("body", "name")),
        ("POST", "/token", {"role": "client", "name": 12}, ("body", "name")),
        (
            "POST",
            "/schedules",
            {**CRON_KWARGS, "trigger_kwargs": {"hour": 1.0}},
            ("body", "trigger_kwargs", "hour"),
        ),
        (
            "POST",
            "/schedules",
            {**CRON_KWARGS, "trigger_kwargs": {"hour": True}},
            ("body", "trigger_kwargs", "hour"),
        ),
    ],
)
async def test_a_field_the_schema_types_strictly_refuses_other_json_types(
    callers: Callers, method: str, path: str, body: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    if "{id}" in path:
        path = path.format(id=await _a_schedule(callers))

    response = await callers.admin.http.request(method, path, json=body)

    assert response.status_code == 422, response.text
    assert tuple(response.json()["detail"][0]["loc"]) == loc
