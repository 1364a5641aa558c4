"""Re-running final tasks by hand, and changing many tasks at once: what an operator does after
an outage or a bad deploy (docs/rerunning.md). Shared by the HTTP API's endpoints (and anything
else that re-runs tasks), so there is one way to do it.

A re-run task is made pending in Redis first, and due there for reconciliation's republish as a
new task is; its message is published (with confirms) after. So a publish that fails loses
nothing: the timeout daemon publishes it again within TASKBROKER_REPUBLISH_AFTER, and the
re-run stands (the caller is told so, it is not refused). Bulk changes walk the indexes a
batch at a time, one atomic script call per batch of ids and one publish per batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from taskbroker import metrics
from taskbroker.errors import BrokerUnavailable, QueueMissing, TaskNotRetryable
from taskbroker.models import RETRYABLE_STATES, TaskState
from taskbroker.names import queue_name
from taskbroker.queue.base import QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import Rerun, TaskStore, task_not_found

log = structlog.get_logger("taskbroker.rerunning")

BATCH = 1000
"""Task ids per script call and per publish of a bulk change."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tasks a bulk change touches: of ``schedulers``, those in ``state`` (None: every state
    the change applies to) that are at least ``older_than`` old (created, for an abort; finished,
    for a retry), of ``owner`` ("": any token's), at most ``limit`` of them."""

    schedulers: Sequence[str]
    state: TaskState | None
    older_than: timedelta
    limit: int
    owner: str = ""


@dataclass(frozen=True, slots=True)
class Reruns:
    reruns: list[Rerun]
    published: bool
    """Every pending re-run's message was confirmed; if not, reconciliation publishes them."""


async def rerun(
    task_ids: Sequence[str],
    *,
    store: TaskStore,
    broker: QueueBroker,
    settings: Settings,
    now: datetime,
    expires: datetime,
    not_before: datetime | None = None,
    owner: str = "",
) -> Reruns:
    """Re-run these tasks (TaskStore.retry), then publish the pending ones."""
    reruns = await store.retry(task_ids, now=now, expires=expires, not_before=not_before, owner=owner)
    retried = [r for r in reruns if r.retried]
    published = await _publish([r for r in retried if r.state == TaskState.PENDING], broker, settings)
    for r in retried:
        log.info("task.retried", task_id=r.id, scheduler=r.scheduler, state=r.state, by=owner or None)
        metrics.task_scheduled(r.scheduler)
    return Reruns(reruns, published)


def check_rerun(outcome: Rerun) -> None:
    """For a re-run of one task: TaskNotFound when it is gone (or another token's), else
    TaskNotRetryable unless it was re-run."""
    if outcome.outcome == "gone":
        raise task_not_found(outcome.id)
    if outcome.outcome == "unscheduled":
        raise TaskNotRetryable(
            f"task {outcome.id} cannot be retried: its scheduler {outcome.scheduler!r} was deleted"
        )
    if not outcome.retried:
        raise TaskNotRetryable(
            f"task {outcome.id} is {outcome.state}: only a failed, timed-out or aborted task can "
            "be retried (a live one is still on its way: abort it first; a complete one is done)"
        )


async def rerun_matching(
    selection: Selection,
    *,
    store: TaskStore,
    broker: QueueBroker,
    settings: Settings,
    now: datetime,
    expires: datetime,
    not_before: datetime | None = None,
) -> Reruns:
    """Re-run up to ``selection.limit`` retained failed, timed-out or aborted tasks, newest first
    per scheduler and state, a batch at a time."""
    states = [selection.state] if selection.state is not None else list(RETRYABLE_STATES)
    finished_before = now - selection.older_than if selection.older_than else None
    done: list[Rerun] = []
    published = True
    for scheduler in selection.schedulers:
        for state in states:
            # Re-run tasks leave the index; the ones left (another token's) are skipped past.
            skipped = 0
            while len(done) < selection.limit:
                ids = await store.final_ids(
                    scheduler,
                    state,
                    finished_before=finished_before,
                    limit=min(BATCH, selection.limit - len(done)),
                    offset=skipped,
                )
                if not ids:
                    break
                batch = await rerun(
                    ids,
                    store=store,
                    broker=broker,
                    settings=settings,
                    now=now,
                    expires=expires,
                    not_before=not_before,
                    owner=selection.owner,
                )
                done += [r for r in batch.reruns if r.retried]
                skipped += sum(1 for r in batch.reruns if not r.retried)
                published = published and batch.published
    return Reruns(done, published)


async def abort_matching(selection: Selection, *, store: TaskStore, now: datetime) -> list[str]:
    """Abort up to ``selection.limit`` live tasks (pending, running or delayed), a batch of the
    live index at a time; their consumers are told to cancel the running ones. Returns the ids."""
    created_before = now - selection.older_than if selection.older_than else None
    aborted: list[str] = []
    for scheduler in selection.schedulers:
        async for ids in store.live_ids(scheduler, batch=BATCH):
            batch = await store.abort_many(
                ids,
                now=now,
                limit=selection.limit - len(aborted),
                owner=selection.owner,
                state=selection.state,
                created_before=created_before,
            )
            await store.notify_cancel(batch)
            metrics.task_finished(scheduler, TaskState.ABORTED, len(batch))
            log.info("tasks.aborted", scheduler=scheduler, count=len(batch), by=selection.owner or None)
            aborted += batch
            if len(aborted) >= selection.limit:
                return aborted
    return aborted


async def _publish(reruns: Sequence[Rerun], broker: QueueBroker, settings: Settings) -> bool:
    """Publish the re-run tasks' messages, one publish per scheduler; False if one failed (the
    tasks are due for reconciliation, which publishes them again)."""
    by_scheduler: dict[str, tuple[list[bytes], list[int]]] = defaultdict(lambda: ([], []))
    for r in reruns:
        bodies, priorities = by_scheduler[r.scheduler]
        bodies.append(r.id.encode())
        priorities.append(r.priority)
    ok = True
    for scheduler, (bodies, priorities) in by_scheduler.items():
        try:
            await broker.publish(queue_name(settings.key_prefix, scheduler), bodies, priorities)
        except (BrokerUnavailable, QueueMissing) as exc:
            log.warning("tasks.retry_publish_failed", scheduler=scheduler, count=len(bodies), error=str(exc))
            ok = False
    return ok
