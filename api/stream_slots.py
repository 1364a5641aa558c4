"""The open event streams of one API process, held by token: admission under the caps, release
however a stream ends, and the end of every stream of a token that is revoked or expires.

A token is checked when a request arrives, but an event stream lasts for hours after that. So
the streams are held here by the token that opened them, and one watcher re-checks the tokens
of all of them every ``TASKBROKER_STREAM_TOKEN_CHECK`` seconds, in one Redis call per process
(not one per stream, nor per token): a token no longer valid has all its streams ended within
that time. The same index bounds what one token, and the whole process, may hold open, since
every open stream costs the process a buffer and a share of each event's fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import structlog
from fastapi import HTTPException, status
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from taskbroker.api import sse
from taskbroker.api.event_hub import Subscription
from taskbroker.errors import StoreUnavailable
from taskbroker.settings import Settings
from taskbroker.tokens import Principal, TokenStore

log = structlog.get_logger("taskbroker.api")

RETRY_AFTER_SECONDS = 5
"""What a refused stream is told to wait: streams end all the time, a slot is soon free."""
TOKEN_ENDED = "the token was revoked or has expired"


class StreamSlot:
    """One admitted stream's place under the caps, and the way its token's end reaches it."""

    def __init__(self, slots: StreamSlots, token_id: str) -> None:
        self.token_id = token_id
        self.ended: str | None = None
        self._slots = slots
        self._subscription: Subscription | None = None
        self._released = False

    def follow(self, subscription: Subscription) -> None:
        """End ``subscription`` (so its stream) when this slot is ended, or now if it was."""
        self._subscription = subscription
        if self.ended is not None:
            subscription.end(self.ended)

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        if self._subscription is not None:
            self._subscription.end(reason)

    def release(self) -> None:
        """Free the place; idempotent, as a stream may end in more than one way at once."""
        if not self._released:
            self._released = True
            self._slots.forget(self)


class StreamSlots:
    def __init__(self, tokens: TokenStore, settings: Settings) -> None:
        self._tokens = tokens
        self._per_token = settings.streams_per_token
        self._per_process = settings.streams_per_process
        self._check_every = settings.stream_token_check
        self._by_token: dict[str, set[StreamSlot]] = {}
        self._open = 0
        self._watcher: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        """Streams admitted and not yet released."""
        return self._open

    def admit(self, principal: Principal) -> StreamSlot:
        """A slot for one more stream of ``principal``'s token; 429 with Retry-After over a cap."""
        held = self._by_token.setdefault(principal.token_id, set())
        if len(held) >= self._per_token:
            raise _refused(
                f"this token already has the most open event streams a token may have on this API "
                f"process ({self._per_token} open event streams per token, "
                "TASKBROKER_STREAMS_PER_TOKEN): close one, or follow many tasks in one GET /events"
            )
        if self._open >= self._per_process:
            raise _refused(
                f"this API process already holds its most, {self._per_process} open event streams "
                "(TASKBROKER_STREAMS_PER_PROCESS): retry later, or on another replica"
            )
        slot = StreamSlot(self, principal.token_id)
        held.add(slot)
        self._open += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="stream-token-watcher")
        return slot

    def forget(self, slot: StreamSlot) -> None:
        held = self._by_token.get(slot.token_id)
        if held is None or slot not in held:
            return
        held.discard(slot)
        self._open -= 1
        if not held:
            del self._by_token[slot.token_id]

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        """While streams are open: every interval, end the streams of tokens no longer valid."""
        while self._by_token:
            await asyncio.sleep(self._check_every)
            token_ids = list(self._by_token)
            try:
                valid = await self._tokens.still_valid(token_ids)
            except StoreUnavailable as exc:
                # The hub ends every stream when Redis is gone; a brief outage ends none.
                log.warning("events.token_check_failed", error=str(exc))
                continue
            for token_id in token_ids:
                if token_id in valid:
                    continue
                ended = list(self._by_token.get(token_id, ()))
                for slot in ended:
                    slot.end(TOKEN_ENDED)
                if ended:
                    log.info("events.token_streams_ended", token_id=token_id, streams=len(ended))


def _refused(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


class EventStreamResponse(StreamingResponse):
    """An event stream that frees its slot when the response is done, however it ends: its body
    finished or failed, or the client went away. The body's own cleanup cannot be trusted with
    that: a body cancelled before its first step never runs its ``finally``, and one cancelled
    while its chunk was being sent runs it only when the generator is collected; so the body is
    closed here too."""

    def __init__(self, body: AsyncGenerator[str], slot: StreamSlot) -> None:
        super().__init__(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        self._body = body
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
            await self._body.aclose()
