"""A message whose task is not in Redis (lost with a Redis write no replica had when its primary
failed) is dropped, as any message nobody needs, and counted where an operator can alert:
``taskbroker_worker_orphan_messages_total{scheduler}`` and a ``task.orphan_message`` warning."""

from __future__ import annotations

import uuid

from structlog.testing import capture_logs

from taskbroker import metrics
from taskbroker.backends import Backends
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from tests.support.inprocess import Api, running_consumer
from tests.support.waiting import eventually

SCHEDULER = "orphans"


def _orphans() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "taskbroker_worker_orphan_messages_total", {"scheduler": SCHEDULER}
    )
    return value or 0.0


async def test_a_message_whose_task_is_gone_is_dropped_counted_and_logged_as_a_warning(
    api: Api, backends: Backends, settings: Settings
) -> None:
    await api.register(SCHEDULER)
    lost = str(uuid.uuid4())  # a task id Redis never stored (or lost in a failover)
    before = _orphans()

    with capture_logs() as logs:
        async with running_consumer(settings, backends, SCHEDULER):
            await backends.broker.publish(queue_name(settings.key_prefix, SCHEDULER), [lost.encode()])

            async def counted() -> bool:
                return _orphans() == before + 1

            await eventually(counted, what="the orphan message counted")

    warnings = [e for e in logs if e["event"] == "task.orphan_message"]
    assert [(e["task_id"], e["log_level"]) for e in warnings] == [(lost, "warning")]
    assert (await backends.broker.stats(queue_name(settings.key_prefix, SCHEDULER))).messages == 0
