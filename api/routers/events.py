"""Task events as Server-Sent Events: one task's changes, or all changes (of one scheduler).

Each stream first replays what the caller missed (everything of a task; after ``Last-Event-ID``
or ``?after=`` when resuming), then follows live events. Redis down: 503 before the stream
starts; mid-stream the stream ends and the client resumes where it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from api import sse
from api.auth import AnyCaller, require_scheduler
from api.dependencies import StoreDep
from api.event_hub import EventHub, Subscription, SubscriptionEnded
from api.schemas import AUTH_ERRORS, ErrorBody
from taskbroker.errors import TaskbrokerError, TaskNotFound
from taskbroker.events import EVENT_ID_PATTERN, START, TaskEvent, parse_event_id
from taskbroker.names import SCHEDULER_NAME_PATTERN
from taskbroker.tokens import Principal, Role

log = structlog.get_logger("taskbroker.api")

router = APIRouter(tags=["events"])

HEARTBEAT_SECONDS = 15.0
REPLAY_BATCH = 500

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
        "description": "An event stream: `id:` the event id, `event:` the state, `data:` a TaskEvent",
    },
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "Unknown task (or another client's)"},
    503: {"model": ErrorBody, "description": "Redis unreachable: retry later"},
}

After = Annotated[
    str | None,
    Query(pattern=EVENT_ID_PATTERN, description="Resume after this event id (as Last-Event-ID does)."),
]
LastEventId = Annotated[
    str | None,
    Header(pattern=EVENT_ID_PATTERN, description="Sent by EventSource on reconnect; wins over ?after="),
]


def event_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


HubDep = Annotated[EventHub, Depends(event_hub)]


def _visible_to(principal: Principal) -> Callable[[TaskEvent], bool]:
    """Admins see every event; workers those of their schedulers; clients their own tasks only."""
    if principal.role is Role.CLIENT:
        return lambda event: event.owner == principal.token_id and principal.may_use(event.scheduler)
    return lambda event: principal.may_use(event.scheduler)


def _stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@router.get("/task/{task_id}/events", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def task_events(
    task_id: UUID,
    principal: AnyCaller,
    store: StoreDep,
    hub: HubDep,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """The task's events so far, then live ones; the stream ends after its final state's event."""
    task = await store.get(task_id)
    if principal.role is Role.CLIENT and not principal.owns(task.owner):
        raise TaskNotFound(f"task {task_id} does not exist or has expired")
    await hub.start()
    return _stream(_task_stream(hub, task_id, last_event_id or after or START))


async def _task_stream(hub: EventHub, task_id: UUID, after: str) -> AsyncIterator[str]:
    subscription: Subscription | None = None
    bound = log.bind(task_id=str(task_id))
    try:
        # Subscribe before reading the history, so nothing falls between the two.
        subscription = await hub.subscribe(lambda event: event.task_id == task_id)
        yield sse.RETRY
        history = await hub.events.task_history(task_id, after=after)
        cursor = parse_event_id(after)
        for past in history.events:
            yield sse.message(past)
            cursor = parse_event_id(past.id)
        if history.final or not history.exists:
            return
        while True:
            event = await subscription.next(HEARTBEAT_SECONDS)
            if event is None:
                yield sse.HEARTBEAT
                if not (await hub.events.task_history(task_id, after=START)).exists:
                    return
                continue
            if parse_event_id(event.id) <= cursor:
                continue  # already sent from the history
            yield sse.message(event)
            cursor = parse_event_id(event.id)
            if event.state.is_final:
                return
    except (TaskbrokerError, SubscriptionEnded) as exc:
        bound.info("events.stream_ended", reason=str(exc))
    finally:
        if subscription is not None:
            hub.unsubscribe(subscription)


@router.get("/events", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def events(
    principal: AnyCaller,
    hub: HubDep,
    scheduler: Annotated[str | None, Query(pattern=SCHEDULER_NAME_PATTERN)] = None,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Live events of every task the caller may see (of one scheduler with ``?scheduler=``);
    resuming after an event id first replays what is retained since then. Never ends by itself."""
    if scheduler is not None:
        require_scheduler(principal, scheduler)
    visible = _visible_to(principal)

    def wants(event: TaskEvent) -> bool:
        return (scheduler is None or event.scheduler == scheduler) and visible(event)

    await hub.start()
    return _stream(_all_stream(hub, wants, last_event_id or after))


async def _all_stream(
    hub: EventHub, wants: Callable[[TaskEvent], bool], after: str | None
) -> AsyncIterator[str]:
    subscription: Subscription | None = None
    try:
        subscription = await hub.subscribe(wants)
        yield sse.RETRY
        cursor = parse_event_id(START)
        if after is not None:
            position = after
            while batch := await hub.events.read_after(position, count=REPLAY_BATCH):
                for past in batch:
                    if wants(past):
                        yield sse.message(past)
                position = batch[-1].id
                if len(batch) < REPLAY_BATCH:
                    break
            cursor = parse_event_id(position)
        while True:
            event = await subscription.next(HEARTBEAT_SECONDS)
            if event is None:
                yield sse.HEARTBEAT
            elif parse_event_id(event.id) > cursor:
                yield sse.message(event)
                cursor = parse_event_id(event.id)
    except (TaskbrokerError, SubscriptionEnded) as exc:
        log.info("events.stream_ended", reason=str(exc))
    finally:
        if subscription is not None:
            hub.unsubscribe(subscription)
