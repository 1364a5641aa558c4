"""Task events as Server-Sent Events: one task's changes, or all changes (of one scheduler).

Each stream first replays what the caller missed (everything of a task; after ``Last-Event-ID``
or ``?after=`` when resuming), then follows live events. Redis down: 503 before the stream
starts; mid-stream the stream ends and the client resumes where it was. Each stream holds a
slot of api.stream_slots while it is open: 429 over the caps, and the stream ends when its
token is revoked or expires.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from taskbroker.api import sse
from taskbroker.api.auth import AnyCaller, require_scheduler, require_visible
from taskbroker.api.dependencies import StoreDep
from taskbroker.api.event_hub import EventHub, Subscription, SubscriptionEnded
from taskbroker.api.schemas import AUTH_ERRORS, ErrorBody
from taskbroker.api.stream_slots import EventStreamResponse, StreamSlot, StreamSlots
from taskbroker.errors import TaskbrokerError
from taskbroker.event_models import EVENT_ID_PATTERN, START, TaskEvent, parse_event_id
from taskbroker.names import SCHEDULER_NAME_PATTERN

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
    404: {"model": ErrorBody, "description": "Unknown task (or one this token may not see)"},
    429: {
        "model": ErrorBody,
        "description": "Too many open event streams for this token or API process: retry after Retry-After",
    },
    503: {"model": ErrorBody, "description": "Redis unreachable: retry later"},
}


def _resume_point(value: str | None) -> str | None:
    """The whole id checked, its parts' range too: a 422 now, not a Redis error mid-stream."""
    if value is not None:
        parse_event_id(value)
    return value


After = Annotated[
    str | None,
    Query(pattern=EVENT_ID_PATTERN, description="Resume after this event id (as Last-Event-ID does)."),
    AfterValidator(_resume_point),
]
LastEventId = Annotated[
    str | None,
    Header(pattern=EVENT_ID_PATTERN, description="Sent by EventSource on reconnect; wins over ?after="),
    AfterValidator(_resume_point),
]


def event_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


def stream_slots(request: Request) -> StreamSlots:
    slots: StreamSlots = request.app.state.stream_slots
    return slots


HubDep = Annotated[EventHub, Depends(event_hub)]
SlotsDep = Annotated[StreamSlots, Depends(stream_slots)]


async def _respond(hub: EventHub, slot: StreamSlot, body: AsyncGenerator[str]) -> EventStreamResponse:
    """The stream, once the hub follows Redis (503 before the stream starts if it cannot)."""
    try:
        await hub.start()
    except BaseException:
        slot.release()
        raise
    return EventStreamResponse(body, slot)


@router.get("/task/{task_id}/events", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def task_events(
    task_id: UUID,
    principal: AnyCaller,
    store: StoreDep,
    hub: HubDep,
    slots: SlotsDep,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """The task's events so far, then live ones; the stream ends after its final state's event."""
    require_visible(principal, await store.get(task_id))
    slot = slots.admit(principal)
    return await _respond(hub, slot, _task_stream(hub, slot, task_id, last_event_id or after or START))


async def _task_stream(hub: EventHub, slot: StreamSlot, task_id: UUID, after: str) -> AsyncGenerator[str]:
    subscription: Subscription | None = None
    bound = log.bind(task_id=str(task_id))
    try:
        # Subscribe before reading the history, so nothing falls between the two.
        subscription = await hub.subscribe(lambda event: event.task_id == task_id)
        slot.follow(subscription)
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
        slot.release()
        if subscription is not None:
            hub.unsubscribe(subscription)


@router.get("/events", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def events(
    principal: AnyCaller,
    hub: HubDep,
    slots: SlotsDep,
    scheduler: Annotated[str | None, Query(pattern=SCHEDULER_NAME_PATTERN)] = None,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Live events of every task the caller may see (of one scheduler with ``?scheduler=``);
    resuming after an event id first replays what is retained since then. Never ends by itself,
    but for its token's end (revoked, expired) or the server's."""
    if scheduler is not None:
        require_scheduler(principal, scheduler)

    def wants(event: TaskEvent) -> bool:
        return (scheduler is None or event.scheduler == scheduler) and principal.sees(
            event.scheduler, event.owner
        )

    slot = slots.admit(principal)
    return await _respond(hub, slot, _all_stream(hub, slot, wants, last_event_id or after))


async def _all_stream(
    hub: EventHub, slot: StreamSlot, wants: Callable[[TaskEvent], bool], after: str | None
) -> AsyncGenerator[str]:
    subscription: Subscription | None = None
    try:
        subscription = await hub.subscribe(wants)
        slot.follow(subscription)
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
        slot.release()
        if subscription is not None:
            hub.unsubscribe(subscription)
