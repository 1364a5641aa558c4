"""One consumer of one scheduler's queue.

The order of steps is what makes the guarantees (docs/operations.md, "Delivery guarantee"):

1. A delivery waits for a free slot (at most ``prefetch`` wait; a wait longer than the hold
   limit hands it back, so a delivery never sits unacked long enough to meet RabbitMQ's
   consumer_timeout).
2. ``claim`` makes the task running under this consumer's lease in one atomic step, and only
   then is the message acked: from here on the lease in Redis, not the unacked message, keeps
   the task safe, so a task may run for hours without holding a delivery open.
3. Heartbeats renew the leases; a task whose lease this consumer no longer holds (aborted,
   timed out, taken over) is cancelled through the runtime. Cancel notices published by the API
   and the daemon make that immediate; the heartbeat is the backstop. A consumer cut off from
   Redis cannot renew, so it fences itself: it cancels a run before that run's lease can lapse,
   so another consumer that takes the task over never runs it at the same time.
4. ``finish`` records the outcome only if the lease is still this consumer's. A failed attempt
   of a task with a retry policy goes through ``fail_attempt`` instead, which (under the same
   lease check) moves it to ``delayed`` for its backoff or fails it (docs/retries.md).
5. An attempt past its ``attempt_timeout`` is cancelled through the runtime; once the runtime
   says nothing of it still runs (``wait_stopped``, the lease held meanwhile) it counts as a
   failed, retryable attempt, so a retry never overlaps the attempt it follows.

Each heartbeat is one round trip (``TaskStore.heartbeat``): it renews the leases, writes this
consumer's inventory record (``GET /consumers``) and reads whether its scheduler is paused. A
paused consumer cancels its subscription, so RabbitMQ keeps the scheduler's messages in the
queue for when it resumes, and runs what it already runs to its end. A consumer subscribes only
after its first heartbeat has said its scheduler is not paused, so a replica started while
paused stays idle. Cancelling, not basic.qos or channel.flow: a prefetch of 0 means unlimited,
RabbitMQ refuses a client's flow stop, and a cancel hands the prefetched messages back at once,
so the queue shows 0 consumers: what an operator draining it waits for.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from taskbroker import metrics
from taskbroker.errors import BrokerUnavailable, QueueMissing, StoreUnavailable, TaskbrokerError
from taskbroker.lifecycle import Backoff, sleep_unless_stopped
from taskbroker.models import Task, TaskState
from taskbroker.names import queue_name
from taskbroker.queue.base import Delivery, QueueBroker, Subscription
from taskbroker.recovery import republish
from taskbroker.retry_policy import RetryPolicy
from taskbroker.runtimes.base import Runtime, TaskCancelled, TaskFailed, TaskRetry
from taskbroker.settings import Settings
from taskbroker.store import AttemptOutcome, ClaimOutcome, ConsumerIdentity, TaskStore

log = structlog.get_logger("taskbroker.worker")
R = TypeVar("R")

RESUBSCRIBE_BACKOFF_CAP = 5.0
"""Seconds between subscribe attempts at most: how soon a consumer finds its queue declared again."""
STABLE_SUBSCRIPTION = 30.0
"""A subscription that lasted this many seconds was healthy: after its loss the backoff starts over."""
FAILURE_WARNING_INTERVAL = 60.0
"""Failed subscribe attempts in a row log one warning per this many seconds (the rest at debug)."""
ATTEMPT_TIMED_OUT = "attempt_timeout"
"""The cancel reason of a run past its attempt_timeout: it keeps its lease until it has stopped."""
NO_RETRY_BEFORE_TIMEOUT = " (not retried: the next attempt would come after the task's timeout)"
NO_POLICY = RetryPolicy(max_attempts=1)


def new_consumer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _version() -> str:
    try:
        return importlib.metadata.version("taskbroker")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


@dataclass
class _Run:
    task: Task
    lease_until: float
    """Epoch seconds by which this run's lease lapses unless renewed (an early estimate)."""
    ended: bool = False
    cancel_reason: str | None = None
    log: Any = field(default=None)
    timer: asyncio.TimerHandle | None = None
    """Cancels the run at its attempt_timeout."""


class Consumer:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TaskStore,
        broker: QueueBroker,
        runtime: Runtime,
        scheduler: str,
        concurrency: int,
        prefetch: int | None = None,
        consumer_id: str | None = None,
        runtime_name: str = "",
    ) -> None:
        self._settings = settings
        self._store = store
        self._broker = broker
        self._runtime = runtime
        self._scheduler = scheduler
        self._queue = queue_name(settings.key_prefix, scheduler)
        self._concurrency = concurrency
        self._prefetch = prefetch or concurrency
        self.consumer_id = consumer_id or new_consumer_id()
        self._identity = ConsumerIdentity(
            id=self.consumer_id,
            scheduler=scheduler,
            runtime=runtime_name or type(runtime).__name__,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=_version(),
            concurrency=concurrency,
            started_at=time.time(),
        )
        self._paused: bool | None = None
        """Whether the last heartbeat found the scheduler paused; None before the first one."""
        self._pause_changed = asyncio.Event()
        self._waiting: deque[tuple[float, Delivery]] = deque()
        self._delivery_ready = asyncio.Event()
        self._runs: dict[str, _Run] = {}
        self._timeouts: set[asyncio.Task[None]] = set()
        self._draining = False
        self.ready = asyncio.Event()
        """Set while the consumer is subscribed to its queue, cleared while it is not (a lost
        subscription, shutdown); tests and `dev` wait on it. The metrics port shows it as
        ``taskbroker_worker_subscribed``."""
        self.paused = asyncio.Event()
        """Set while the consumer is unsubscribed because its scheduler is paused (it is healthy:
        its readiness says paused)."""
        self._log = log.bind(scheduler=scheduler, consumer=self.consumer_id)

    # Public entry point

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain: finish what runs within the grace period,
        hand back the rest, return."""
        await self._runtime.start()
        runners = [asyncio.create_task(self._runner(), name=f"runner-{i}") for i in range(self._concurrency)]
        background = [
            asyncio.create_task(self._heartbeat(stop), name="heartbeat"),
            asyncio.create_task(self._fence(), name="fence"),
            asyncio.create_task(self._listen_for_cancels(stop), name="cancel-listener"),
            asyncio.create_task(self._return_stale_deliveries(stop), name="hold-limit"),
        ]
        self._log.info(
            "consumer.started", queue=self._queue, concurrency=self._concurrency, prefetch=self._prefetch
        )
        try:
            await self._consume(stop)
        finally:
            await self._drain(runners)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._runtime.close()
            await self._leave_inventory()
            self._log.info("consumer.stopped")

    def subscription_state(self) -> str | None:
        """ "subscribed", "paused" (deliberately unsubscribed: its scheduler is paused), or None
        while it is neither (starting, or resubscribing after a loss)."""
        if self.ready.is_set():
            return "subscribed"
        if self.paused.is_set():
            return "paused"
        return None

    # Receiving

    def _on_delivery(self, delivery: Delivery) -> None:
        if self._draining:
            delivery.requeue()
            return
        self._waiting.append((time.monotonic(), delivery))
        self._delivery_ready.set()

    async def _consume(self, stop: asyncio.Event) -> None:
        """Stay subscribed until ``stop``: after any loss (queue deleted, its node down, channel
        or connection closed) report not ready and subscribe again with backoff."""
        backoff = Backoff(cap=RESUBSCRIBE_BACKOFF_CAP)
        try:
            while (
                await self._wait_unpaused(stop)
                and (subscription := await self._subscribe(stop, backoff)) is not None
            ):
                subscribed_at = time.monotonic()
                self._set_ready(True)
                self._log.info("consumer.subscribed", queue=self._queue)
                while not (stop.is_set() or subscription.lost.is_set() or self._paused):
                    await self._wait_any(stop, subscription.lost, self._pause_changed)
                if stop.is_set():
                    self._set_ready(False)
                    self._draining = True
                    await subscription.cancel()
                    return
                if self._paused and not subscription.lost.is_set():
                    self._set_ready(False)
                    await subscription.cancel()
                    # The broker took the unacked deliveries back with the subscription.
                    self._waiting.clear()
                    continue
                self._set_ready(False)
                if time.monotonic() - subscribed_at >= STABLE_SUBSCRIPTION:
                    backoff.reset()  # a loss after a healthy while is not part of a flapping run
                delay = backoff.next_delay()
                self._log_loss(subscription, retry_in=delay)
                await sleep_unless_stopped(stop, delay)
        finally:
            self._set_ready(False)

    async def _wait_unpaused(self, stop: asyncio.Event) -> bool:
        """Wait until a heartbeat has found the scheduler not paused; False once ``stop`` is set.
        While paused, the consumer is unsubscribed: RabbitMQ holds the messages for others."""
        while not stop.is_set() and self._paused is not False:
            if self._paused:
                self.paused.set()
            await self._wait_any(stop, self._pause_changed)
        self.paused.clear()
        return not stop.is_set()

    async def _wait_any(self, *events: asyncio.Event) -> None:
        """Wait until one of ``events`` is set. ``_pause_changed`` is cleared first: callers
        check the pause state just before, with no await in between."""
        self._pause_changed.clear()
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        first = self._paused is None
        self._paused = paused
        self._pause_changed.set()
        if paused:
            self._log.info("consumer.paused", running=sum(not r.ended for r in self._runs.values()))
        elif not first:
            self._log.info("consumer.resumed")
            self._delivery_ready.set()

    async def _subscribe(self, stop: asyncio.Event, backoff: Backoff) -> Subscription | None:
        """A new subscription, retried with backoff while RabbitMQ is unreachable or the queue
        is missing; None once ``stop`` is set. The queue is never declared here: the consumer
        does not own it (registering the scheduler declares it, deleting it deletes the queue),
        so a consumer of a deleted scheduler waits, and consumes again once it is registered."""
        last_warning: float | None = None
        failures = 0
        while not stop.is_set():
            try:
                return await self._broker.subscribe(
                    self._queue, prefetch=self._prefetch, on_delivery=self._on_delivery
                )
            except (BrokerUnavailable, QueueMissing) as exc:
                failures += 1
                delay = backoff.next_delay()
                # A queue may stay missing for hours: a warning when it starts, then one a minute.
                now = time.monotonic()
                quiet = last_warning is not None and now - last_warning < FAILURE_WARNING_INTERVAL
                if not quiet:
                    last_warning = now
                (self._log.debug if quiet else self._log.warning)(
                    "consumer.subscribe_failed", error=str(exc), attempts=failures, retry_in=round(delay, 2)
                )
                await sleep_unless_stopped(stop, delay)
        return None

    def _log_loss(self, subscription: Subscription, *, retry_in: float) -> None:
        # The broker has put our unacked deliveries back (or deleted them with their queue): the
        # copies waiting here are stale, and acking them would be a no-op on a dead channel.
        # Running tasks are left alone: their leases in Redis, not the channel, keep them.
        stale = len(self._waiting)
        self._waiting.clear()
        loss = subscription.loss
        self._log.warning(
            "consumer.subscription_lost",
            reason=loss.cause.value if loss is not None else "unknown",
            detail=loss.detail if loss is not None else None,
            deliveries_dropped=stale,
            running=sum(not r.ended for r in self._runs.values()),
            retry_in=round(retry_in, 2),
        )

    def _set_ready(self, subscribed: bool) -> None:
        if subscribed == self.ready.is_set():
            return
        if subscribed:
            self.ready.set()
        else:
            self.ready.clear()
        metrics.consumer_subscribed(self._scheduler, subscribed)

    async def _next_delivery(self) -> Delivery | None:
        # Paused: the deliveries still waiting here go back with the subscription, not to a run.
        while not self._waiting or self._paused:
            if self._draining:
                return None
            self._delivery_ready.clear()
            await self._delivery_ready.wait()
        return self._waiting.popleft()[1]

    async def _return_stale_deliveries(self, stop: asyncio.Event) -> None:
        """Hand back deliveries that waited past the hold limit for a slot (all slots held by long
        tasks), so they reach a replica with room and never meet the broker's consumer_timeout."""
        limit = self._settings.hold_limit
        while not await sleep_unless_stopped(stop, limit / 4):
            cutoff = time.monotonic() - limit
            while self._waiting and self._waiting[0][0] < cutoff:
                self._waiting.popleft()[1].requeue()

    # Running

    async def _runner(self) -> None:
        backoff = Backoff()
        while (delivery := await self._next_delivery()) is not None:
            try:
                await self._handle(delivery)
                backoff.reset()
            except StoreUnavailable as exc:
                delivery.requeue()
                delay = backoff.next_delay()
                self._log.warning("consumer.store_unavailable", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _handle(self, delivery: Delivery) -> None:
        task_id = delivery.body.decode("utf-8", errors="replace")
        try:
            uuid.UUID(task_id)
        except ValueError:
            delivery.ack()
            self._log.warning("task.dropped", reason="message is not a task id", body=task_id[:80])
            return
        claimed_at = time.time()
        claim = await self._store.claim(
            task_id,
            consumer=self.consumer_id,
            lease=self._settings.lease,
            max_attempts=self._settings.max_attempts,
        )
        # Acked only now: the task is either ours under a lease, or nobody needs this message.
        delivery.ack()
        if claim.outcome is not ClaimOutcome.CLAIMED or claim.task is None:
            event = "task.gave_up" if claim.outcome is ClaimOutcome.EXHAUSTED else "task.dropped"
            metrics.claim_refused(self._scheduler, claim.outcome)
            if claim.outcome is ClaimOutcome.GONE:
                # An operator's alert: after a Redis failover, a task acknowledged to its client
                # whose creation no replica had (TASKBROKER_REDIS_MIN_REPLICAS=0) ends here.
                self._log.warning(
                    "task.orphan_message",
                    task_id=task_id,
                    reason="the message's task is not in Redis: lost with an unreplicated write, "
                    "or past its retention",
                )
                return
            self._log.info(event, task_id=task_id, reason=claim.outcome.value, state=claim.detail or None)
            return
        await self._execute(claim.task, lease_until=claimed_at + self._settings.lease)

    async def _execute(self, task: Task, *, lease_until: float) -> None:
        key = str(task.id)
        run = _Run(
            task,
            lease_until=lease_until,
            log=self._log.bind(task_id=key, scheduler=self._scheduler, attempt=task.attempts),
        )
        self._runs[key] = run
        run.log.info("task.started")
        started = metrics.run_started(task)
        if task.attempt_timeout is not None:
            run.timer = asyncio.get_running_loop().call_later(
                task.attempt_timeout, self._attempt_timed_out, key
            )
        try:
            try:
                result = await self._runtime.run(task)
            except TaskCancelled:
                if run.cancel_reason != ATTEMPT_TIMED_OUT:
                    run.log.info("task.cancelled", reason=run.cancel_reason)
                    return
                await self._runtime.wait_stopped(task)
                await self._failed(
                    run,
                    f"attempt {task.attempts} ran longer than its attempt_timeout of "
                    f"{task.attempt_timeout:g} s and was cancelled",
                )
            except TaskRetry as exc:
                await self._failed(
                    run, exc.message or "the task asked for a retry", after=exc.after, asked=True
                )
            except Exception as exc:  # a runtime's failure is the task's failure, never the consumer's
                if isinstance(exc, TaskFailed):
                    await self._failed(run, str(exc), retryable=exc.retry)
                else:
                    await self._failed(run, f"{type(exc).__name__}: {exc}")
            else:
                await self._record(run, TaskState.COMPLETE, result=result)
        finally:
            if run.timer is not None:
                run.timer.cancel()
            metrics.run_ended(task.scheduler, started)
            run.ended = True
            if run.cancel_reason != "shutdown":
                self._runs.pop(key, None)

    def _attempt_timed_out(self, task_id: str) -> None:
        stop = asyncio.ensure_future(self._cancel(task_id, reason=ATTEMPT_TIMED_OUT))
        self._timeouts.add(stop)
        stop.add_done_callback(self._timeouts.discard)

    async def _failed(
        self,
        run: _Run,
        error: str,
        *,
        retryable: bool = True,
        after: float | None = None,
        asked: bool = False,
    ) -> None:
        """A failed attempt: retried after its backoff (``after``, if the run asked for one) when
        its policy has attempts left and it is ``retryable``, else the task fails. A task without
        a retry policy takes the plain ``finish`` (today's path, unchanged)."""
        task = run.task
        policy = task.retry or NO_POLICY
        if asked and not policy.retries_after(task.attempts):
            error += f" (no retry: its retry policy allows {policy.max_attempts} attempt(s) in all)"
        if task.retry is None:
            await self._record(run, TaskState.FAILED, error=error)
            return
        retry_at: float | None = None
        if retryable and policy.retries_after(task.attempts):
            retry_at = time.time() + (after if after is not None else policy.delay(task.attempts))
        outcome = await self._write(
            run,
            "failed",
            lambda: self._store.fail_attempt(
                str(task.id),
                consumer=self.consumer_id,
                error=error,
                retry_at=retry_at,
                why_not=NO_RETRY_BEFORE_TIMEOUT,
            ),
        )
        if outcome is AttemptOutcome.DELAYED:
            assert retry_at is not None
            run.log.info("task.retry_delayed", error=error, not_before=round(retry_at, 3))
            metrics.task_retried(self._scheduler)
        elif outcome is AttemptOutcome.FAILED:
            run.log.info("task.failed", error=error)
            metrics.task_finished(self._scheduler, TaskState.FAILED)
        elif outcome is not None:
            run.log.warning("task.outcome_discarded", outcome="failed", kept_state=outcome.value)

    async def _write(self, run: _Run, outcome: str, call: Callable[[], Awaitable[R]]) -> R | None:
        """``call``, retried through a Redis outage for as long as the lease could still be ours;
        None if it never got through (another consumer may have taken the task over by then)."""
        backoff = Backoff()
        give_up_at = time.monotonic() + self._settings.lease
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                if time.monotonic() > give_up_at:
                    run.log.error(
                        "task.outcome_lost", state=outcome, error=str(exc), note="it will run again"
                    )
                    return None
                await asyncio.sleep(backoff.next_delay())

    async def _record(
        self, run: _Run, state: TaskState, *, result: Any = None, error: str | None = None
    ) -> None:
        """Write the final outcome, retrying through a Redis outage for as long as the lease could
        still be ours; after that another consumer may have taken the task over anyway. (Kept
        apart from ``_write``, which does the same for ``fail_attempt``: this is the hot path.)"""
        backoff = Backoff()
        give_up_at = time.monotonic() + self._settings.lease
        while True:
            try:
                kept = await self._store.finish(
                    str(run.task.id), consumer=self.consumer_id, state=state, result=result, error=error
                )
            except StoreUnavailable as exc:
                if time.monotonic() > give_up_at:
                    run.log.error(
                        "task.outcome_lost", state=state.value, error=str(exc), note="it will run again"
                    )
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            if kept is None:
                run.log.info(f"task.{state.value}", **({"error": error} if error else {}))
                metrics.task_finished(self._scheduler, state)
            else:
                run.log.warning("task.outcome_discarded", outcome=state.value, kept_state=kept.value)
            return

    async def _cancel(self, task_id: str, reason: str) -> None:
        run = self._runs.get(task_id)
        if run is None or run.ended or run.cancel_reason is not None:
            return
        run.cancel_reason = reason
        started = time.perf_counter()
        await self._runtime.cancel(run.task)
        run.log.info(
            "task.cancel_requested", reason=reason, cancel_seconds=round(time.perf_counter() - started, 4)
        )

    # Leases

    async def _check_leases(self, task_ids: list[str]) -> None:
        """Renew these leases now (a cancel notice named them): cancel the runs no longer ours."""
        renewed_at = time.time()
        lost = await self._store.renew(task_ids, consumer=self.consumer_id, lease=self._settings.lease)
        await self._renewed(task_ids, lost, renewed_at)

    async def _beat(self, held: list[str]) -> None:
        """One heartbeat: renew the leases, refresh the inventory record, learn of a pause."""
        renewed_at = time.time()
        beat = await self._store.heartbeat(
            self._identity, held, lease=self._settings.lease, paused=self.paused.is_set()
        )
        self._set_paused(beat.paused)
        await self._renewed(held, beat.lost, renewed_at)

    async def _renewed(self, task_ids: list[str], lost: list[str], renewed_at: float) -> None:
        for task_id in set(task_ids) - set(lost):
            if (run := self._runs.get(task_id)) is not None:
                run.lease_until = renewed_at + self._settings.lease
        for task_id in lost:
            await self._cancel(task_id, reason="no longer ours: aborted, timed out or taken over")

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Beat at once (the consumer subscribes only once it knows whether it is paused), then
        every heartbeat interval."""
        while True:
            # Runs cancelled for shutdown keep their leases until they are handed back.
            # So do runs past their attempt_timeout, until they have stopped and their failure
            # is written: a retry must not start while one still runs.
            held = [
                k
                for k, r in self._runs.items()
                if (not r.ended and r.cancel_reason in (None, ATTEMPT_TIMED_OUT))
                or r.cancel_reason == "shutdown"
            ]
            try:
                # Bounded, so a hung connection cannot stall the heartbeat past the fence below.
                await asyncio.wait_for(self._beat(held), timeout=self._settings.heartbeat_interval)
            except (StoreUnavailable, TimeoutError) as exc:
                self._log.warning(
                    "consumer.heartbeat_failed", error=str(exc) or "timed out", running=len(held)
                )
            await asyncio.sleep(self._settings.heartbeat_interval)

    async def _fence(self) -> None:
        """Cancel runs whose leases are about to lapse unrenewed (Redis unreachable): once a lease
        lapses another consumer may take the task over, and one run at a time beats finishing
        this one. The task runs again, as after a crash. Assumes clocks synchronised (NTP) to
        well within a heartbeat interval."""
        margin = self._settings.heartbeat_interval
        while True:
            await asyncio.sleep(margin / 2)
            now = time.time()
            for key, run in list(self._runs.items()):
                if not run.ended and run.cancel_reason is None and now >= run.lease_until - margin:
                    run.log.warning("task.fenced", lease_until=round(run.lease_until, 3))
                    await self._cancel(key, reason="its lease could not be renewed: Redis unreachable")

    async def _listen_for_cancels(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                async for task_ids in self._store.cancel_notices():
                    backoff.reset()
                    mine = [i for i in task_ids if i in self._runs]
                    if mine:
                        await self._check_leases(mine)
            except StoreUnavailable as exc:
                self._log.debug("consumer.cancel_listener_lost", error=str(exc))
            await sleep_unless_stopped(stop, backoff.next_delay())

    # Shutdown

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        self._draining = True
        while self._waiting:
            self._waiting.popleft()[1].requeue()
        self._delivery_ready.set()
        running = [k for k, r in self._runs.items() if not r.ended]
        if running:
            self._log.info("consumer.draining", running=len(running), grace=self._settings.shutdown_grace)
        _, unfinished = (
            await asyncio.wait(runners, timeout=self._settings.shutdown_grace) if runners else ((), ())
        )
        if unfinished:
            for key in [k for k, r in self._runs.items() if not r.ended]:
                await self._cancel(key, reason="shutdown")
            _, stuck = await asyncio.wait(unfinished, timeout=10)
            for runner in stuck:
                runner.cancel()
            cancelled = [r for r in self._runs.values() if r.cancel_reason == "shutdown"]
            if cancelled:
                self._log.info("consumer.waiting_for_runtime", tasks=len(cancelled))
                await asyncio.gather(*(self._runtime.wait_stopped(r.task) for r in cancelled))
            await self._hand_back([str(r.task.id) for r in cancelled])

    async def _leave_inventory(self) -> None:
        """A clean stop leaves `GET /consumers` at once; if Redis is unreachable the record
        expires within a lease anyway."""
        try:
            await self._store.forget_consumer(self.consumer_id)
        except StoreUnavailable as exc:
            self._log.warning("consumer.inventory_left_to_expire", error=str(exc))

    async def _hand_back(self, task_ids: list[str]) -> None:
        """Give unfinished tasks back at shutdown: lapse their leases, then republish them. If
        the republish fails, the daemon's lease sweep republishes them instead."""
        try:
            refs = await self._store.release(task_ids, consumer=self.consumer_id)
            moved = await republish(self._store, self._broker, refs)
            self._log.info("consumer.handed_back", tasks=len(refs), requeued=moved)
        except TaskbrokerError as exc:
            self._log.warning("consumer.hand_back_deferred", tasks=len(task_ids), error=str(exc))
        for key in task_ids:
            self._runs.pop(key, None)
