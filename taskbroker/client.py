"""A small HTTP client for the API, used by the CLI's client commands."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import httpx

from taskbroker.models import SchedulerDefinition, SchedulerStatus, Task
from taskbroker.schedule_models import Schedule, ScheduleRun, ScheduleSpec


class ApiError(Exception):
    """The API answered with an error status; ``detail`` is its explanation."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class Client:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, timeout=timeout, headers=headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json() if response.content else None

    def register_scheduler(self, definition: SchedulerDefinition) -> SchedulerStatus:
        return SchedulerStatus.model_validate(self._call("POST", "/scheduler", json=definition.model_dump()))

    def schedulers(self) -> list[SchedulerStatus]:
        return [SchedulerStatus.model_validate(s) for s in self._call("GET", "/schedulers")]

    def schedule(
        self,
        scheduler: str,
        attributes: dict[str, Any],
        timeout: str | None = None,
        *,
        priority: int = 0,
        key: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """The new task, or (200) the live one already holding ``key``."""
        body: dict[str, Any] = {"scheduler": scheduler, "attributes": attributes}
        if timeout is not None:
            body["timeout"] = timeout
        if priority:
            body["priority"] = priority
        if key is not None:
            body["key"] = key
        if callback_url is not None:
            body["callback_url"] = callback_url
        return Task.model_validate(self._call("POST", "/task/schedule", json=body))

    def get(self, task_id: UUID | str) -> Task:
        return Task.model_validate(self._call("GET", f"/task/{task_id}"))

    def abort(self, task_id: UUID | str) -> Task:
        return Task.model_validate(self._call("POST", f"/task/{task_id}/abort"))

    def wait(self, task_id: UUID | str, *, timeout: float | None = None, poll: float = 0.2) -> Task:
        """Poll until the task is final (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task.state.is_final:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task.state.value} after {timeout} s")
            time.sleep(poll)

    # Recurring schedules (one block, so it moves as one)

    def schedules_list(self) -> list[Schedule]:
        return [Schedule.model_validate(s) for s in self._call("GET", "/schedules")]

    def schedule_create(self, spec: ScheduleSpec) -> Schedule:
        body = spec.model_dump(mode="json", exclude_unset=True)
        return Schedule.model_validate(self._call("POST", "/schedules", json=body))

    def schedule_update(self, schedule_id: UUID | str, changes: dict[str, Any]) -> Schedule:
        return Schedule.model_validate(self._call("PATCH", f"/schedules/{schedule_id}", json=changes))

    def schedule_delete(self, schedule_id: UUID | str) -> None:
        self._call("DELETE", f"/schedules/{schedule_id}")

    def schedule_run(self, schedule_id: UUID | str) -> Task:
        return Task.model_validate(self._call("POST", f"/schedules/{schedule_id}/run"))

    def schedule_runs(self, schedule_id: UUID | str, limit: int = 100) -> list[ScheduleRun]:
        runs = self._call("GET", f"/schedules/{schedule_id}/runs", params={"limit": limit})
        return [ScheduleRun.model_validate(r) for r in runs]
