"""The HTTP API of a running `taskbroker` process, through a blocking client, for tests that drive
subprocesses and so have no event loop of their own to share."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import eventually_sync

FINAL_STATES = frozenset({"complete", "failed", "aborted", "timeout"})


class BlockingApi:
    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    def _check(self, response: httpx.Response, *expected: int) -> Any:
        assert response.status_code in expected, (
            f"{response.request.url}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def register(self, name: str, runtime: str = "inline") -> dict[str, Any]:
        body = {"name": name, "runtime": runtime}
        status: dict[str, Any] = self._check(self.http.post(f"{self.url}/scheduler", json=body), 201)
        return status

    def scheduler(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self._check(self.http.get(f"{self.url}/scheduler/{name}"), 200)
        return status

    def schedule(self, scheduler: str, attributes: dict[str, Any]) -> dict[str, Any]:
        body = {"scheduler": scheduler, "attributes": attributes}
        task: dict[str, Any] = self._check(self.http.post(f"{self.url}/task/schedule", json=body), 201)
        return task

    def schedule_batch(self, scheduler: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"tasks": [{"scheduler": scheduler, "attributes": call} for call in calls]}
        tasks: list[dict[str, Any]] = self._check(
            self.http.post(f"{self.url}/task/schedule/batch", json=body), 201
        )["tasks"]
        return tasks

    def task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._check(self.http.get(f"{self.url}/task/{task_id}"), 200)
        return task

    def wait_for_state(self, task_id: str, *states: str, deadline: float = 60.0) -> dict[str, Any]:
        """The task once it is in one of ``states`` (default: any final state)."""
        wanted = set(states) or FINAL_STATES

        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["state"] in wanted else None

        found: dict[str, Any] | None = eventually_sync(
            reached, what=f"task {task_id} to reach {sorted(wanted)}", deadline=deadline, interval=0.1
        )
        assert found is not None
        return found
