"""The scheduling lane (api.scheduling_lane) answers every request exactly as the whole app does:
each request below goes to an app with lanes and to one without, over the same real servers,
and the two answers must match."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskbroker.api.app import create_app
from taskbroker.api.scheduling_lane import LanedFastAPI
from taskbroker.backends import Backends
from taskbroker.errors import BrokerUnavailable
from taskbroker.metrics import REGISTRY
from taskbroker.settings import Settings

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"x": 1}}
VALID = {"scheduler": "alpha", "attributes": ECHO}
JSON = {"headers": {"content-type": "application/json"}}
VOLATILE = {"id", "created_at", "timeout"}
"""Fields that differ between two tasks scheduled by the same request."""


class Pair:
    """The same request to an app with lanes and to one without; their answers."""

    def __init__(self, laned: httpx.AsyncClient, whole: httpx.AsyncClient) -> None:
        self.laned = laned
        self.whole = whole

    async def post(self, path: str, **request: Any) -> tuple[httpx.Response, httpx.Response]:
        return await self.laned.post(path, **request), await self.whole.post(path, **request)


def _client(app: Any, token: str) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a 500 is compared as the client sees it, not as a raise.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(
        transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.fixture
async def pair(settings: Settings, real: Backends) -> AsyncIterator[Pair]:
    assert settings.admin_token is not None
    token = settings.admin_token.get_secret_value()
    laned = _client(create_app(settings, real, owns_backends=False), token)
    whole = _client(create_app(settings, real, owns_backends=False, lanes=False), token)
    for name in ("alpha", "beta"):
        response = await laned.post("/scheduler", json={"name": name})
        assert response.status_code == 201, response.text
    yield Pair(laned, whole)
    await laned.aclose()
    await whole.aclose()


@pytest.fixture
def lane_serves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the lane served itself, in order."""
    served: list[str] = []
    serve = LanedFastAPI._serve

    async def counted(self: LanedFastAPI, binding: Any, scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await serve(self, binding, scope, receive, send)

    monkeypatch.setattr(LanedFastAPI, "_serve", counted)
    return served


def assert_same(laned: httpx.Response, whole: httpx.Response) -> None:
    assert laned.status_code == whole.status_code, (laned.text, whole.text)
    for header in ("content-type", "www-authenticate", "retry-after"):
        assert laned.headers.get(header) == whole.headers.get(header), header
    laned_body, whole_body = laned.json(), whole.json()
    if isinstance(laned_body, dict) and "id" in laned_body:
        laned_body, whole_body = stable(laned_body), stable(whole_body)
    assert laned_body == whole_body


def stable(task: dict[str, Any]) -> dict[str, Any]:
    """A task's fields but those that differ between two tasks of the same request."""
    return {k: v for k, v in task.items() if k not in VOLATILE}


async def test_a_common_request_is_served_by_the_lane_and_answered_as_by_the_whole_app(
    pair: Pair, lane_serves: list[str]
) -> None:
    laned, whole = await pair.post("/task/schedule", json={"scheduler": "alpha", "attributes": ECHO})

    assert laned.status_code == 201, laned.text
    assert_same(laned, whole)
    assert lane_serves == ["/task/schedule"]
    assert laned.json()["id"] != whole.json()["id"]


async def test_a_batch_is_served_by_the_lane_and_answered_as_by_the_whole_app(
    pair: Pair, lane_serves: list[str]
) -> None:
    body = {"tasks": [{"scheduler": "alpha", "attributes": ECHO}, {"scheduler": "beta", "attributes": ECHO}]}
    laned, whole = await pair.post("/task/schedule/batch", json=body)

    assert laned.status_code == 201, laned.text
    assert lane_serves == ["/task/schedule/batch"]
    assert [stable(t) for t in laned.json()["tasks"]] == [stable(t) for t in whole.json()["tasks"]]


@pytest.mark.parametrize(
    ("case", "request_"),
    [
        ("no JSON", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("no scheduler", {"json": {"attributes": ECHO}}),
        ("a bad priority", {"json": {"scheduler": "alpha", "attributes": ECHO, "priority": 12}}),
        ("an unknown scheduler", {"json": {"scheduler": "nowhere", "attributes": ECHO}}),
        ("a bad scheduler name", {"json": {"scheduler": "no spaces", "attributes": ECHO}}),
        ("attributes not an object", {"json": {"scheduler": "alpha", "attributes": [1, 2]}}),
        ("a timeout in the past", {"json": {**VALID, "timeout": "2001-01-01T00:00:00Z"}}),
        ("no token", {"json": VALID, "headers": {"authorization": ""}}),
        ("a wrong token", {"json": VALID, "headers": {"authorization": "Bearer tb_0123456789ab_nope"}}),
        ("another scheme", {"json": VALID, "headers": {"authorization": "Basic abc"}}),
        ("a text body", {"content": b"scheduler=alpha", "headers": {"content-type": "text/plain"}}),
        ("a body over the limit", {"json": {"scheduler": "alpha", "attributes": {"x": "y" * 2_000_000}}}),
        ("a timeout past year 9999 in UTC", {"json": {**VALID, "timeout": "9999-12-31T23:59:59-14:00"}}),
        ("a timeout before year 1 in UTC", {"json": {**VALID, "timeout": "0001-01-01T00:00:00+14:00"}}),
        ("NaN in attributes", {"content": b'{"scheduler": "alpha", "attributes": {"x": NaN}}', **JSON}),
        ("1e400 in attributes", {"content": b'{"scheduler": "alpha", "attributes": [1e400]}', **JSON}),
        ("a priority as text", {"json": {**VALID, "priority": "9"}}),
        ("a priority as a boolean", {"json": {**VALID, "priority": True}}),
        ("a priority as a float", {"json": {**VALID, "priority": 9.0}}),
        ("no content type", {"content": b'{"scheduler": "alpha"}'}),
        ("a UTF-16 body", {"content": '{"scheduler": "alpha"}'.encode("utf-16"), **JSON}),
        ("a UTF-16 body without a BOM", {"content": '{"scheduler": "alpha"}'.encode("utf-16-le"), **JSON}),
        ("a Latin-1 body", {"content": '{"scheduler": "alpha", "name": "\xe9"}'.encode("latin-1"), **JSON}),
    ],
)  # fmt: skip
async def test_a_refused_request_is_answered_as_by_the_whole_app(
    pair: Pair, case: str, request_: dict[str, Any]
) -> None:
    laned, whole = await pair.post("/task/schedule", **request_)

    assert 400 <= laned.status_code < 500, (case, laned.text)
    assert_same(laned, whole)


async def test_a_client_token_for_another_scheduler_is_refused_as_by_the_whole_app(
    pair: Pair, lane_serves: list[str]
) -> None:
    created = await pair.laned.post("/token", json={"role": "client", "name": "c", "schedulers": ["beta"]})
    assert created.status_code == 201, created.text
    headers = {"authorization": f"Bearer {created.json()['token']}"}

    laned, whole = await pair.post(
        "/task/schedule", json={"scheduler": "alpha", "attributes": ECHO}, headers=headers
    )

    assert laned.status_code == 403
    assert_same(laned, whole)
    assert lane_serves == ["/task/schedule"]


async def test_an_idempotency_key_header_takes_the_whole_app_and_is_answered_the_same(
    pair: Pair, lane_serves: list[str]
) -> None:
    body = {"scheduler": "alpha", "attributes": ECHO}
    first = await pair.laned.post("/task/schedule", json=body, headers={"Idempotency-Key": "k-1"})
    again_laned, again_whole = await pair.post(
        "/task/schedule", json=body, headers={"Idempotency-Key": "k-1"}
    )

    assert first.status_code == 201, first.text
    assert again_laned.status_code == 200
    assert_same(again_laned, again_whole)
    assert again_laned.json()["id"] == again_whole.json()["id"] == first.json()["id"]
    assert lane_serves == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BrokerUnavailable("RabbitMQ is unreachable: retry later"), 503),  # with Retry-After
        (RuntimeError("a bug"), 500),  # answered by the 500 handler, which words it for clients
    ],
)
async def test_a_failure_after_the_request_was_accepted_is_answered_as_by_the_whole_app(
    pair: Pair, real: Backends, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    async def failing(*_args: Any, **_kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(real.broker, "publish", failing)
    laned, whole = await pair.post("/task/schedule", json=VALID)

    assert laned.status_code == status
    assert_same(laned, whole)
    assert ("retry-after" in laned.headers) == (status == 503)
    assert "a bug" not in laned.text


async def test_a_request_served_by_the_lane_is_counted_under_its_route(pair: Pair) -> None:
    labels = {"method": "POST", "route": "/task/schedule", "status": "201"}

    def served() -> float:
        return REGISTRY.get_sample_value("taskbroker_http_request_duration_seconds_count", labels) or 0.0

    before = served()
    laned, _whole = await pair.post("/task/schedule", json={"scheduler": "alpha", "attributes": ECHO})

    assert laned.status_code == 201
    assert served() == before + 2  # one by the lane, one by the whole app


def test_a_lane_refuses_a_router_with_dependencies_or_a_prefix() -> None:
    from fastapi import APIRouter, Depends

    from taskbroker.api.routers.tasks import scheduling_router

    app = LanedFastAPI()
    with pytest.raises(TypeError, match="no app or router dependencies"):
        app.include_laned_router(
            APIRouter(dependencies=[Depends(lambda: None)]), lanes=True, max_body_bytes=1000
        )
    with pytest.raises(TypeError, match="no prefix"):
        app.include_laned_router(APIRouter(prefix="/v1"), lanes=True, max_body_bytes=1000)
    guarded = LanedFastAPI(dependencies=[Depends(lambda: None)])
    with pytest.raises(TypeError):
        guarded.include_laned_router(scheduling_router, lanes=True, max_body_bytes=1000)


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PUT"])
async def test_another_method_on_a_lane_path_is_405_as_by_the_whole_app(pair: Pair, method: str) -> None:
    for path in ("/task/schedule", "/task/schedule/batch"):
        laned = await pair.laned.request(method, path)
        whole = await pair.whole.request(method, path)

        assert laned.status_code == 405, laned.text
        assert laned.headers["allow"] == whole.headers["allow"] == "POST"
        assert_same(laned, whole)


class RecordingMiddleware:
    """A middleware the lane does not know: it records the path of every request it sees."""

    def __init__(self, app: Any, seen: list[str]) -> None:
        self._app = app
        self._seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self._seen.append(scope["path"])
        await self._app(scope, receive, send)


@pytest.mark.parametrize("path", ["/task/schedule", "/task/schedule/batch"])
async def test_a_scheduling_request_goes_through_a_middleware_added_to_the_app(
    settings: Settings, real: Backends, lane_serves: list[str], path: str
) -> None:
    assert settings.admin_token is not None
    app = create_app(settings, real, owns_backends=False)
    seen: list[str] = []
    app.add_middleware(RecordingMiddleware, seen=seen)
    body = VALID if path == "/task/schedule" else {"tasks": [VALID]}
    async with _client(app, settings.admin_token.get_secret_value()) as client:
        assert (await client.post("/scheduler", json={"name": "alpha"})).status_code == 201
        response = await client.post(path, json=body)

    assert response.status_code == 201, response.text
    assert seen == ["/scheduler", path]
    assert lane_serves == []


async def test_a_scheduling_request_gets_the_cors_headers_of_a_cors_middleware(
    settings: Settings, real: Backends
) -> None:
    from fastapi.middleware.cors import CORSMiddleware

    assert settings.admin_token is not None
    app = create_app(settings, real, owns_backends=False)
    app.add_middleware(CORSMiddleware, allow_origins=["https://ui.example"])
    async with _client(app, settings.admin_token.get_secret_value()) as client:
        assert (await client.post("/scheduler", json={"name": "alpha"})).status_code == 201
        response = await client.post("/task/schedule", json=VALID, headers={"Origin": "https://ui.example"})

    assert response.status_code == 201, response.text
    assert response.headers["access-control-allow-origin"] == "https://ui.example"


async def test_a_middleware_cannot_be_added_once_the_lane_has_served(
    settings: Settings, real: Backends, lane_serves: list[str]
) -> None:
    assert settings.admin_token is not None
    app = create_app(settings, real, owns_backends=False)
    async with _client(app, settings.admin_token.get_secret_value()) as client:
        response = await client.post("/task/schedule", json={"scheduler": "nobody", "attributes": ECHO})
    assert response.status_code == 404, response.text
    assert lane_serves == ["/task/schedule"]

    with pytest.raises(RuntimeError, match="after an application has started"):
        app.add_middleware(RecordingMiddleware, seen=[])
