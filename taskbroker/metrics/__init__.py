"""Every metric taskbroker exports, defined in one place, and the one-line hooks that update them.

Counters and histograms are per process (Prometheus sums them across instances): the API counts
tasks scheduled and aborted, a consumer counts runs started and finished and observes run time
and queue wait, the timeout daemon counts sweeps, expiries and requeues. Each final transition
is counted once, by the process that made it. Gauges of shared state (live tasks, queue depth,
consumers) are read from Redis and RabbitMQ at scrape time by the API only
(taskbroker.metrics.live), so replicas never report the same figure twice.

Hooks cost a dictionary lookup and a locked add: no I/O, safe on the consumer's hot path. Labels
are bounded: scheduler names (registered by admins), states, HTTP methods, route templates and
status codes; never a task id.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from taskbroker.models import Task, TaskState
from taskbroker.store import ClaimOutcome

# The *_created series double every counter and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
"""What every taskbroker process exposes: the metrics below and the process's CPU, memory, GC."""
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Task runs last from milliseconds (no-op Inline calls) to hours (containers up to the timeout).
TASK_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
    21600,
)  # fmt: skip

# API

TASKS_SCHEDULED = Counter(
    "taskbroker_tasks_scheduled",
    "Tasks accepted by this API process (stored and their messages confirmed).",
    ["scheduler"],
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "taskbroker_http_request_duration_seconds",
    "API request latency by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)

# Any process that makes a task final

TASKS_FINISHED = Counter(
    "taskbroker_tasks_finished",
    "Tasks this process made final, by final state: consumers write complete and failed, the "
    "timeout daemon timeout, the API aborted.",
    ["scheduler", "state"],
    registry=REGISTRY,
)

# Consumer

TASKS_STARTED = Counter(
    "taskbroker_tasks_started",
    "Task runs (attempts) this consumer process started.",
    ["scheduler"],
    registry=REGISTRY,
)
TASK_RUN_SECONDS = Histogram(
    "taskbroker_task_run_seconds",
    "How long one run of a task took in this consumer, from its start to its outcome.",
    ["scheduler"],
    buckets=TASK_SECONDS_BUCKETS,
    registry=REGISTRY,
)
TASK_QUEUE_WAIT_SECONDS = Histogram(
    "taskbroker_task_queue_wait_seconds",
    "Time from a task's creation to the start of its run (a retried task counts from creation).",
    ["scheduler"],
    buckets=TASK_SECONDS_BUCKETS,
    registry=REGISTRY,
)
TASKS_RUNNING = Gauge(
    "taskbroker_worker_running_tasks",
    "Tasks this consumer process is running now.",
    ["scheduler"],
    registry=REGISTRY,
)
TASKS_RETRIED = Counter(
    "taskbroker_tasks_retried",
    "Failed attempts this consumer process sent back to wait for a retry (delayed by the "
    "task's backoff), per scheduler.",
    ["scheduler"],
    registry=REGISTRY,
)
CONSUMERS_SUBSCRIBED = Gauge(
    "taskbroker_worker_subscribed",
    "Consumers of this process subscribed to the scheduler's queue now (1 for a worker; 0 while "
    "it resubscribes after losing its subscription: queue deleted, node down, connection lost).",
    ["scheduler"],
    registry=REGISTRY,
)

ORPHAN_MESSAGES = Counter(
    "taskbroker_worker_orphan_messages",
    "Messages whose task is not in Redis (dropped): a task lost with a Redis write that no "
    "replica had when its primary failed, or a message older than the task's retention. "
    "Alert on any increase after a Redis failover.",
    ["scheduler"],
    registry=REGISTRY,
)

# Timeout daemon

SWEEPS = Counter(
    "taskbroker_timeout_daemon_sweeps", "Sweeps this timeout daemon completed.", registry=REGISTRY
)
SWEEP_FAILURES = Counter(
    "taskbroker_timeout_daemon_sweep_failures",
    "Sweeps that failed (Redis or RabbitMQ unreachable) and will be retried.",
    registry=REGISTRY,
)
SWEEP_SECONDS = Histogram(
    "taskbroker_timeout_daemon_sweep_duration_seconds",
    "How long one sweep of this timeout daemon took.",
    registry=REGISTRY,
)
TASKS_EXPIRED = Counter(
    "taskbroker_timeout_daemon_expired",
    "Tasks this daemon moved to timeout, by the state they were in.",
    ["scheduler", "previous_state"],
    registry=REGISTRY,
)
TASKS_REQUEUED = Counter(
    "taskbroker_timeout_daemon_requeued",
    "Tasks whose lease lapsed (their consumer died) that this daemon put back on their queue.",
    registry=REGISTRY,
)
TASKS_REPUBLISHED = Counter(
    "taskbroker_timeout_daemon_republished",
    "Pending tasks no consumer claimed within TASKBROKER_REPUBLISH_AFTER (a publish never "
    "confirmed, or a message lost) whose message this daemon published again.",
    ["scheduler"],
    registry=REGISTRY,
)
TASKS_RELEASED = Counter(
    "taskbroker_timeout_daemon_released",
    "Delayed tasks this daemon made pending when due and published (a delay or a retry's backoff over).",
    ["scheduler"],
    registry=REGISTRY,
)


# Hooks: one call at each place where something happens.


# A consumer counts five series per task; ``labels()`` builds and looks up its key under a
# lock each time (~1.5 us, a tenth of a no-op task's consumer CPU for the five). The labelled
# series of a scheduler never change once made (nothing removes them), so they are kept; so
# are the API's, per scheduler and per route, method and status.


def task_scheduled(scheduler: str) -> None:
    _scheduled(scheduler).inc()


@functools.lru_cache(maxsize=4096)
def _scheduled(scheduler: str) -> Counter:
    return TASKS_SCHEDULED.labels(scheduler)


@functools.lru_cache(maxsize=4096)
def _finished(scheduler: str, state: TaskState) -> Counter:
    return TASKS_FINISHED.labels(scheduler, state.value)


class _RunSeries(NamedTuple):
    started: Counter
    running: Gauge
    queue_wait: Histogram
    run_seconds: Histogram


@functools.lru_cache(maxsize=1024)
def _run_series(scheduler: str) -> _RunSeries:
    return _RunSeries(
        TASKS_STARTED.labels(scheduler),
        TASKS_RUNNING.labels(scheduler),
        TASK_QUEUE_WAIT_SECONDS.labels(scheduler),
        TASK_RUN_SECONDS.labels(scheduler),
    )


def task_finished(scheduler: str, state: TaskState, count: int = 1) -> None:
    if count:
        _finished(scheduler, state).inc(count)


_FINAL_AT_CLAIM = {ClaimOutcome.EXPIRED: TaskState.TIMEOUT, ClaimOutcome.EXHAUSTED: TaskState.FAILED}


def claim_refused(scheduler: str, outcome: ClaimOutcome) -> None:
    """A claim that ran nothing; it made the task final if it was past its timeout or attempts."""
    if (state := _FINAL_AT_CLAIM.get(outcome)) is not None:
        _finished(scheduler, state).inc()
    elif outcome is ClaimOutcome.GONE:
        ORPHAN_MESSAGES.labels(scheduler).inc()


def run_started(task: Task) -> float:
    """Count a run and its queue wait; returns the start time to give to ``run_ended``."""
    series = _run_series(task.scheduler)
    series.started.inc()
    series.running.inc()
    if task.started_at is not None:
        wait = (task.started_at - task.created_at).total_seconds()
        series.queue_wait.observe(max(wait, 0.0))
    return time.perf_counter()


def run_ended(scheduler: str, started: float) -> None:
    series = _run_series(scheduler)
    series.running.dec()
    series.run_seconds.observe(time.perf_counter() - started)


def consumer_subscribed(scheduler: str, subscribed: bool) -> None:
    """A consumer subscribed (True) or stopped being subscribed (False); called once per change."""
    series = CONSUMERS_SUBSCRIBED.labels(scheduler)
    if subscribed:
        series.inc()
    else:
        series.dec()


def task_expired(scheduler: str, previous_state: TaskState, count: int = 1) -> None:
    TASKS_EXPIRED.labels(scheduler, previous_state.value).inc(count)
    TASKS_FINISHED.labels(scheduler, TaskState.TIMEOUT.value).inc(count)


def tasks_requeued(count: int) -> None:
    TASKS_REQUEUED.inc(count)


def task_retried(scheduler: str) -> None:
    TASKS_RETRIED.labels(scheduler).inc()


def tasks_released(scheduler: str, count: int) -> None:
    TASKS_RELEASED.labels(scheduler).inc(count)


def tasks_republished(scheduler: str, count: int) -> None:
    TASKS_REPUBLISHED.labels(scheduler).inc(count)


def sweep_completed(seconds: float) -> None:
    SWEEPS.inc()
    SWEEP_SECONDS.observe(seconds)


def sweep_failed() -> None:
    SWEEP_FAILURES.inc()


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_observed(method: str, route: str, status: int, seconds: float) -> None:
    """``route`` must be a route template (``/task/{task_id}``), never the raw path."""
    _request_series(method if method in _HTTP_METHODS else "other", route, status).observe(seconds)


@functools.lru_cache(maxsize=4096)
def _request_series(method: str, route: str, status: int) -> Histogram:
    return HTTP_REQUEST_SECONDS.labels(method, route, str(status))
