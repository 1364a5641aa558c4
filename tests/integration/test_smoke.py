"""The task path in one process, on the real servers and the embedded pair."""

from __future__ import annotations

from datetime import datetime

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from tests.support.inprocess import Api, running_consumer


async def test_scheduled_echo_task_completes_with_its_kwargs(
    api: Api, settings: Settings, backends: Backends
) -> None:
    await api.register("smoke")

    async with running_consumer(settings, backends, "smoke"):
        task = await api.schedule(
            "smoke", {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"a": 1}}
        )
        final = await api.wait_for_state(task["id"])

    assert final["state"] == "complete"
    assert final["result"] == {"a": 1}
    assert final["attempts"] == 1
    assert final["error"] is None
    assert final["started_at"] is not None
    created, started, finished = (
        datetime.fromisoformat(final[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
