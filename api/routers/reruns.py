"""Re-running final tasks by hand, and aborting or re-running many at once (docs/rerunning.md).

The owner rules are abort's (api.auth): a client re-runs only the tasks it scheduled (another's
is the 404 of a task that does not exist), every token only those of its schedulers; a bulk
change by a client touches its own tasks only, an admin's any. Workers do neither. A re-run
counts against the token's scheduling rate limit as a new task does (a bulk retry is refused
once the budget is used up, and charged what it re-ran after), so re-running is no way around it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from uuid import UUID

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from taskbroker.api.auth import Scheduling, require_scheduler, require_visible
from taskbroker.api.dependencies import SchedulingContextDep
from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.api.limits import enforce_rate_limit
from taskbroker.api.routers.tasks import ERRORS
from taskbroker.api.schemas import (
    BODY_ERRORS,
    AbortSelection,
    BulkChange,
    RetryOptions,
    RetryRequest,
    RetrySelection,
    TaskSelection,
)
from taskbroker.models import Task, TaskState, utcnow
from taskbroker.rerunning import Selection, abort_matching, check_rerun, rerun, rerun_matching
from taskbroker.settings import Settings
from taskbroker.store import TaskStore
from taskbroker.token_models import Role
from taskbroker.tokens import Principal

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)

RETRY_ERRORS = {**ERRORS, **BODY_ERRORS}


def _times(options: RetryOptions, settings: Settings, now: datetime) -> tuple[datetime, datetime | None]:
    """The re-run's timeout and not_before (None: pending at once); 422 for a timeout too far
    ahead, or a not_before that is not before the timeout."""
    timeout = options.timeout or now + settings.default_timeout
    if timeout - now > settings.max_timeout:
        raise _invalid("timeout", f"timeout is more than {settings.max_timeout} ahead")
    not_before = options.not_before
    if options.delay is not None:
        not_before = now + timedelta(seconds=options.delay)
    if not_before is not None and not_before >= timeout:
        raise _invalid(
            "not_before" if options.not_before is not None else "delay",
            "the task would wait past its timeout: wait less, or give a later timeout",
        )
    return timeout, not_before


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


@router.post("/task/{task_id}/retry", responses=RETRY_ERRORS)
async def retry_task(
    task_id: UUID, principal: Scheduling, context: SchedulingContextDep, body: RetryRequest | None = None
) -> Task:
    """Re-run a failed, timed-out or aborted task that is still retained: pending again (or
    delayed, with ``delay`` or ``not_before``), its attempts counting on; 409 for a live or
    complete task. Answered once its message is confirmed, with the task as it is then (a
    consumer may have started it already)."""
    store = context.store
    require_visible(principal, await store.get(task_id))
    now = utcnow()
    timeout, not_before = _times(body or RetryRequest(), context.settings, now)
    await enforce_rate_limit(context.rate_windows, context.settings, principal.token_id, 1)
    done = await rerun(
        [str(task_id)],
        store=store,
        broker=context.broker,
        settings=context.settings,
        now=now,
        expires=timeout,
        not_before=not_before,
    )
    check_rerun(done.reruns[0])
    return await store.get(task_id)


async def _selection(
    body: TaskSelection, state: TaskState | None, principal: Principal, store: TaskStore
) -> Selection:
    if body.scheduler is not None:
        require_scheduler(principal, body.scheduler)
        schedulers = [body.scheduler]
    else:
        schedulers = [d.name for d in await store.list_schedulers() if principal.may_use(d.name)]
    return Selection(
        schedulers=schedulers,
        state=state,
        older_than=timedelta(seconds=body.older_than),
        limit=body.limit,
        owner=principal.token_id if principal.role is Role.CLIENT else "",
    )


@router.post("/tasks/abort", responses=RETRY_ERRORS)
async def abort_tasks(
    body: AbortSelection, principal: Scheduling, context: SchedulingContextDep
) -> BulkChange:
    """Abort up to ``limit`` live tasks matching the filter (a client's own only)."""
    state = TaskState(body.state) if body.state else None
    selection = await _selection(body, state, principal, context.store)
    aborted = await abort_matching(selection, store=context.store, now=utcnow())
    return BulkChange(changed=len(aborted), ids=[UUID(i) for i in aborted])


@router.post("/tasks/retry", responses=RETRY_ERRORS)
async def retry_tasks(
    body: RetrySelection, principal: Scheduling, context: SchedulingContextDep
) -> BulkChange:
    """Re-run up to ``limit`` retained failed, timed-out or aborted tasks matching the filter
    (a client's own only), newest first."""
    now = utcnow()
    timeout, not_before = _times(body, context.settings, now)
    state = TaskState(body.state) if body.state else None
    selection = await _selection(body, state, principal, context.store)
    await enforce_rate_limit(context.rate_windows, context.settings, principal.token_id, 1)
    done = await rerun_matching(
        selection,
        store=context.store,
        broker=context.broker,
        settings=context.settings,
        now=now,
        expires=timeout,
        not_before=not_before,
    )
    if context.settings.schedule_rate_limit and len(done.reruns) > 1:
        await context.rate_windows.add(principal.token_id, int(time.time() // 60), len(done.reruns) - 1)
    return BulkChange(
        changed=len(done.reruns), ids=[UUID(r.id) for r in done.reruns], published=done.published
    )
