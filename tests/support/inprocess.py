"""The task path assembled in the test's own process: the API app over an ASGI transport and
consumers on the test's event loop, over whichever backends the test was given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx

from taskbroker.api.app import create_app
from taskbroker.backends import Backends
from taskbroker.runtimes.base import RuntimeConfig
from taskbroker.runtimes.inline import InlineRuntime
from taskbroker.scheduler_worker.consumer import Consumer
from taskbroker.settings import Settings
from tests.support.waiting import eventually

TEST_ALLOW = ("tests.support.recorder", "taskbroker.runtimes.builtin")
FINAL_STATES = frozenset({"complete", "failed", "aborted", "timeout"})


@asynccontextmanager
async def api_client(
    settings: Settings, backends: Backends, headers: dict[str, str] | None = None
) -> AsyncIterator[Api]:
    """The API app over ``backends``; requests carry ``headers`` (the admin token by default)."""
    if headers is None:
        headers = (
            {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
            if settings.admin_token
            else {}
        )
    app = create_app(settings, backends, owns_backends=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers
    ) as http:
        yield Api(http)


@asynccontextmanager
async def running_consumer(
    settings: Settings,
    backends: Backends,
    scheduler: str,
    *,
    concurrency: int = 2,
    prefetch: int | None = None,
    allow: tuple[str, ...] = TEST_ALLOW,
) -> AsyncIterator[Consumer]:
    """A consumer subscribed to ``scheduler``'s queue for the duration of the block, then drained."""
    consumer = Consumer(
        settings=settings,
        store=backends.store,
        broker=backends.broker,
        runtime=InlineRuntime(RuntimeConfig(scheduler=scheduler, concurrency=concurrency, allow=allow)),
        scheduler=scheduler,
        concurrency=concurrency,
        prefetch=prefetch,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop), name=f"consumer-{scheduler}")

    async def subscribed() -> bool:
        if running.done():
            running.result()  # surface a consumer that died while starting
        return consumer.ready.is_set()

    try:
        await eventually(subscribed, what=f"the consumer of {scheduler!r} to subscribe")
        yield consumer
    finally:
        stop.set()
        await running


class Api:
    """Thin helpers over the HTTP API, so tests read as what they check."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def register(self, name: str, runtime: str = "inline") -> None:
        response = await self.http.post("/scheduler", json={"name": name, "runtime": runtime})
        assert response.status_code == 201, response.text

    async def schedule(
        self, scheduler: str, attributes: dict[str, Any], expires: datetime | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"scheduler": scheduler, "attributes": attributes}
        if expires is not None:
            body["timeout"] = expires.isoformat()
        response = await self.http.post("/task/schedule", json=body)
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    async def schedule_batch(self, scheduler: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"tasks": [{"scheduler": scheduler, "attributes": call} for call in calls]}
        response = await self.http.post("/task/schedule/batch", json=body)
        assert response.status_code == 201, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    async def task(self, task_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/task/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task

    async def wait_for_state(self, task_id: str, *states: str) -> dict[str, Any]:
        """The task once it is in one of ``states`` (default: any final state)."""
        wanted = set(states) or FINAL_STATES

        async def reached() -> dict[str, Any] | None:
            task = await self.task(task_id)
            return task if task["state"] in wanted else None

        found: dict[str, Any] | None = await eventually(
            reached, what=f"task {task_id} to reach {sorted(wanted)}"
        )
        assert found is not None
        return found

    async def scheduler(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"/scheduler/{name}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status
