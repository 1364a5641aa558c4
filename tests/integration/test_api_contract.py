"""The HTTP contract: what a client gets for bad input, and how schedulers are registered, listed
and deleted. Every test runs on the real servers and on the embedded pair."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskbroker.backends import Backends
from taskbroker.errors import QueueMissing
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.support.inprocess import Api, running_consumer
from tests.support.waiting import eventually

ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"x": 1}}


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _stored_task_keys(backends: Backends) -> list[str]:
    """Task hashes and attributes keys: a refused request must leave neither behind."""
    prefix = backends.store.key_prefix
    return [
        key
        for pattern in (f"{prefix}:task:*", f"{prefix}:attributes:*")
        async for key in backends.store.redis.scan_iter(match=pattern)
    ]


async def test_scheduling_on_an_unknown_scheduler_is_404_with_a_json_detail(
    api: Api, backends: Backends
) -> None:
    response = await api.http.post("/task/schedule", json={"scheduler": "nosuch", "attributes": ECHO})

    assert response.status_code == 404
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert "nosuch" in detail
    assert await _stored_task_keys(backends) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"attributes": ECHO}, id="missing-scheduler"),
        pytest.param({"scheduler": 42, "attributes": ECHO}, id="scheduler-not-a-string"),
        pytest.param({"scheduler": "s", "attributes": "echo"}, id="attributes-not-an-object"),
        pytest.param({"scheduler": "s", "attributes": ECHO, "timeout": "soon"}, id="timeout-not-a-date"),
        pytest.param({"scheduler": "s", "attributes": ECHO, "colour": "red"}, id="extra-field"),
        pytest.param({"scheduler": "Bad Name!", "attributes": ECHO}, id="bad-scheduler-name"),
        pytest.param([{"scheduler": "s"}], id="not-an-object"),
    ],
)
async def test_schedule_request_with_wrong_shape_is_422(api: Api, body: Any) -> None:
    await api.register("s")

    response = await api.http.post("/task/schedule", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_schedule_request_that_is_not_json_is_422(api: Api) -> None:
    response = await api.http.post(
        "/task/schedule", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422


async def test_timeout_in_the_past_is_422_and_stores_nothing(api: Api, backends: Backends) -> None:
    await api.register("s")

    response = await api.http.post(
        "/task/schedule", json={"scheduler": "s", "attributes": ECHO, "timeout": _in(-60)}
    )

    assert response.status_code == 422
    assert "past" in response.text
    assert await _stored_task_keys(backends) == []


async def test_timeout_without_a_timezone_is_422(api: Api) -> None:
    await api.register("s")
    naive = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()

    response = await api.http.post(
        "/task/schedule", json={"scheduler": "s", "attributes": ECHO, "timeout": naive}
    )

    assert response.status_code == 422
    assert "timezone" in response.text


async def test_timeout_with_a_timezone_is_accepted_and_kept(api: Api) -> None:
    await api.register("s")
    timeout = datetime.now(UTC) + timedelta(hours=1)

    task = await api.schedule("s", ECHO, expires=timeout)

    assert datetime.fromisoformat(task["timeout"]) == timeout
    assert datetime.fromisoformat((await api.task(task["id"]))["timeout"]) == timeout


@pytest.mark.parametrize("path", ["/task/not-a-uuid", "/task/123"])
async def test_task_id_that_is_not_a_uuid_is_422(api: Api, path: str) -> None:
    assert (await api.http.get(path)).status_code == 422
    assert (await api.http.post(f"{path}/abort")).status_code == 422


async def test_unknown_task_id_is_404(api: Api) -> None:
    response = await api.http.get(f"/task/{uuid.uuid4()}")

    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


async def test_scheduler_registration_is_201_then_200_for_the_same_definition_then_409(api: Api) -> None:
    definition = {"name": "reg", "runtime": "inline", "description": "first"}

    first = await api.http.post("/scheduler", json=definition)
    again = await api.http.post("/scheduler", json=definition)
    conflicting = await api.http.post("/scheduler", json={**definition, "description": "second"})

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["name"] == "reg"
    assert conflicting.status_code == 409
    assert "reg" in conflicting.json()["detail"]
    assert (await api.scheduler("reg"))["description"] == "first"


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param({"name": "Upper"}, id="uppercase"),
        pytest.param({"name": "has space"}, id="space"),
        pytest.param({"name": "-leading-dash"}, id="leading-dash"),
        pytest.param({"name": "x" * 64}, id="too-long"),
        pytest.param({"name": "ok", "runtime": "Not A Runtime"}, id="bad-runtime-name"),
        pytest.param({"name": "ok", "colour": "red"}, id="extra-field"),
    ],
)
async def test_bad_scheduler_definition_is_422(api: Api, definition: dict[str, Any]) -> None:
    response = await api.http.post("/scheduler", json=definition)

    assert response.status_code == 422, response.text
    assert (await api.http.get("/schedulers")).json() == []


async def test_bad_scheduler_name_in_a_path_is_422(api: Api) -> None:
    assert (await api.http.get("/scheduler/Bad_Name")).status_code == 422
    assert (await api.http.delete("/scheduler/Bad_Name")).status_code == 422


async def test_schedulers_listing_shows_waiting_messages_and_consumers(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register("listed")
    await api.register("other")
    for _ in range(3):
        await api.schedule("listed", ECHO)

    async def listing() -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in (await api.http.get("/schedulers")).json()}

    async def three_waiting() -> dict[str, dict[str, Any]] | None:
        rows = await listing()
        return rows if rows["listed"]["messages"] == 3 else None

    rows: dict[str, dict[str, Any]] | None = await eventually(three_waiting, what="3 messages waiting")
    assert rows is not None
    assert rows["listed"]["consumers"] == 0
    assert rows["listed"]["live_tasks"] == 3
    assert rows["other"]["messages"] == 0
    assert rows["other"]["live_tasks"] == 0

    # Park the consumer's one slot on a long task, so the counts are read while it is attached.
    blocker = await api.schedule(
        "listed", {"function": "taskbroker.runtimes.builtin:sleep", "kwargs": {"seconds": 3600}}
    )
    async with running_consumer(settings, backends, "listed", concurrency=1):
        await api.wait_for_state(blocker["id"], "running")

        async def consumer_attached() -> dict[str, dict[str, Any]] | None:
            rows = await listing()
            return rows if rows["listed"]["consumers"] == 1 and rows["listed"]["live_tasks"] == 1 else None

        rows = await eventually(consumer_attached, what="one consumer attached and the queue drained")
        assert rows is not None
        assert rows["listed"]["messages"] == 0
        assert rows["other"]["consumers"] == 0
        await api.http.post(f"/task/{blocker['id']}/abort")


async def test_deleting_a_scheduler_with_live_tasks_is_409_without_force(
    api: Api, backends: Backends
) -> None:
    await api.register("busy")
    task = await api.schedule("busy", ECHO)

    response = await api.http.delete("/scheduler/busy")

    assert response.status_code == 409
    assert "force" in response.json()["detail"]
    assert (await api.task(task["id"]))["state"] == "pending"
    assert (await api.scheduler("busy"))["live_tasks"] == 1


async def test_force_deleting_a_scheduler_aborts_its_live_tasks_and_removes_its_queue(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register("doomed")
    tasks = [await api.schedule("doomed", ECHO) for _ in range(3)]

    response = await api.http.delete("/scheduler/doomed", params={"force": "true"})

    assert response.status_code == 204
    for task in tasks:
        final = await api.task(task["id"])
        assert final["state"] == "aborted"
        assert "deleted" in final["error"]
    assert (await api.http.get("/scheduler/doomed")).status_code == 404
    assert (await api.http.get("/schedulers")).json() == []
    assert (await api.http.get("/tasks")).json()["tasks"] == []
    # Scheduling onto it now is refused, and its queue is gone.
    assert (
        await api.http.post("/task/schedule", json={"scheduler": "doomed", "attributes": ECHO})
    ).status_code == 404
    with pytest.raises(QueueMissing):
        await backends.broker.stats(queue_name(settings.key_prefix, "doomed"))


async def test_deleting_an_idle_scheduler_is_204_and_an_unknown_one_404(api: Api) -> None:
    await api.register("idle")

    assert (await api.http.delete("/scheduler/idle")).status_code == 204
    assert (await api.http.delete("/scheduler/idle")).status_code == 404


# What a body must be, and which methods a path takes

JSON_BODIES = [
    ("POST", "/scheduler", {"name": "s"}),
    ("POST", "/task/schedule", {"scheduler": "s", "attributes": ECHO}),
    ("POST", "/task/schedule/batch", {"tasks": [{"scheduler": "s", "attributes": ECHO}]}),
    ("POST", "/token", {"role": "client"}),
    ("POST", "/schedules", {"name": "n", "scheduler": "s", "cron": "0 1 * * *"}),
    ("PATCH", f"/schedules/{uuid.uuid4()}", {"enabled": False}),
]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json",
     "application/json; charset=utf-16", "application/jsonx"],
)  # fmt: skip
@pytest.mark.parametrize(("method", "path", "body"), JSON_BODIES)
async def test_a_body_not_declared_as_json_is_415_with_a_json_detail(
    api: Api, method: str, path: str, body: dict[str, Any], content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = await api.http.request(method, path, content=json.dumps(body).encode(), headers=headers)

    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=UTF-8", "application/vnd.taskbroker+json"]
)
async def test_json_and_any_plus_json_type_are_accepted(api: Api, content_type: str) -> None:
    await api.register("s")
    body = json.dumps({"scheduler": "s", "attributes": ECHO}).encode()

    response = await api.http.post("/task/schedule", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-32"),
        lambda text: text.replace("{", '{"caf\xe9": 1, ', 1).encode("latin-1"),
    ],
    ids=["utf-16", "utf-16 without a BOM", "utf-32", "latin-1"],
)
@pytest.mark.parametrize(("method", "path", "body"), JSON_BODIES)
async def test_a_body_that_is_not_utf8_is_400_never_decoded_otherwise(
    api: Api, method: str, path: str, body: dict[str, Any], encode: Any
) -> None:
    await api.register("s")
    text = json.dumps(body)

    response = await api.http.request(
        method, path, content=encode(text), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert "UTF-8" in response.json()["detail"]


SOME_ID = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/task/schedule", {"POST"}),
        ("OPTIONS", "/task/schedule", {"POST"}),
        ("PUT", "/task/schedule/batch", {"POST"}),
        ("DELETE", f"/task/{SOME_ID}", {"GET"}),
        ("GET", f"/task/{SOME_ID}/abort", {"POST"}),
        ("PUT", "/schedulers", {"GET"}),
        ("PUT", "/scheduler/s", {"GET", "DELETE"}),
        ("OPTIONS", "/schedules", {"GET", "POST"}),
        ("PUT", f"/schedules/{SOME_ID}", {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", f"/schedules/{SOME_ID}", {"GET", "PATCH", "DELETE"}),
        ("POST", "/health", {"GET"}),
        ("POST", "/tokens", {"GET"}),
    ],
)
async def test_a_known_path_with_another_method_is_405_allowing_every_method_it_takes(
    api: Api, method: str, path: str, allowed: set[str]
) -> None:
    response = await api.http.request(method, path)

    assert response.status_code == 405, response.text
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert method in response.json()["detail"]


@pytest.mark.parametrize("cursor", ["17300154879259414600:125942140", f"{2**64 - 1}:0", f"{2**63}"])
@pytest.mark.parametrize("scheduler", [None, "contract"])
async def test_a_cursor_of_the_right_shape_that_the_server_refuses_is_422_never_500(
    api: Api, cursor: str, scheduler: str | None
) -> None:
    """Found by schemathesis: the embedded Redis takes cursors below 2**63 only, a real one
    below 2**64; whichever refuses one, the client gets a 422, not a 500."""
    await api.register("contract")
    params = {"cursor": cursor, **({"scheduler": scheduler} if scheduler else {})}

    response = await api.http.get("/tasks", params=params)

    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert "not one this API returned" in response.text
