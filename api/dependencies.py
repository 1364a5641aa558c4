"""Connections, stores and settings reach handlers through Depends, never through globals. Every
store here was built once, with the process's Backends (taskbroker.backends): a request only
looks one up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from taskbroker.backends import Backends
from taskbroker.queue.base import QueueBroker
from taskbroker.rate_windows import RateWindows
from taskbroker.schedule_store import ScheduleStore
from taskbroker.settings import Settings
from taskbroker.store import TaskStore


@dataclass(frozen=True, slots=True)
class SchedulingContext:
    """What scheduling a task needs, as one dependency: FastAPI resolves each dependency of a
    request separately at a cost, and the scheduling endpoints are the API's hot path."""

    store: TaskStore
    broker: QueueBroker
    rate_windows: RateWindows
    settings: Settings


def _backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


async def _store(request: Request) -> TaskStore:
    return _backends(request).store


async def _broker(request: Request) -> QueueBroker:
    return _backends(request).broker


async def _schedules(request: Request) -> ScheduleStore:
    return _backends(request).schedules


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _scheduling_context(request: Request) -> SchedulingContext:
    context: SchedulingContext = request.app.state.scheduling_context
    return context


StoreDep = Annotated[TaskStore, Depends(_store)]
BrokerDep = Annotated[QueueBroker, Depends(_broker)]
SchedulesDep = Annotated[ScheduleStore, Depends(_schedules)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SchedulingContextDep = Annotated[SchedulingContext, Depends(_scheduling_context)]
