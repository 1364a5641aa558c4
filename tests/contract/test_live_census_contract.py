"""TaskStore.live_census, which /metrics reads at scrape time, on the real Redis and the embedded
fakeredis alike: live tasks per scheduler and by state, from the indexes alone."""

from __future__ import annotations

import uuid
from datetime import timedelta

from taskbroker.backends import Backends
from taskbroker.models import SchedulerDefinition, TaskState, utcnow
from taskbroker.store import ClaimOutcome, NewTask


async def test_the_census_counts_live_tasks_per_scheduler_and_by_state(backends: Backends) -> None:
    store = backends.store
    for name in ("alpha", "beta", "idle"):
        await store.register_scheduler(SchedulerDefinition(name=name))
    timeout = utcnow() + timedelta(hours=1)
    alpha = [NewTask(uuid.uuid4(), "alpha", {}, timeout) for _ in range(3)]
    beta = [NewTask(uuid.uuid4(), "beta", {}, timeout) for _ in range(2)]
    await store.create([*alpha, *beta], now=utcnow())
    claim = await store.claim(str(alpha[0].id), consumer="c", lease=30, max_attempts=3)
    assert claim.outcome is ClaimOutcome.CLAIMED
    await store.claim(str(beta[0].id), consumer="c", lease=30, max_attempts=3)
    await store.finish(str(beta[0].id), consumer="c", state=TaskState.COMPLETE, result=None)

    census = await store.live_census()

    assert census.per_scheduler == {"alpha": 3, "beta": 1, "idle": 0}
    assert census.running == 1
    assert census.pending == 3


async def test_the_census_of_an_empty_store_is_zero(backends: Backends) -> None:
    census = await backends.store.live_census()

    assert census.per_scheduler == {}
    assert (census.pending, census.running) == (0, 0)
