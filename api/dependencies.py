"""Connections and settings reach handlers through Depends, never through globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from taskbroker.queue.base import QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import TaskStore


@dataclass(frozen=True, slots=True)
class SchedulingContext:
    """What scheduling a task needs, as one dependency: FastAPI resolves each dependency of a
    request separately at a cost, and the scheduling endpoints are the API's hot path."""

    store: TaskStore
    broker: QueueBroker
    settings: Settings


async def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.backends.store
    return store


async def _broker(request: Request) -> QueueBroker:
    broker: QueueBroker = request.app.state.backends.broker
    return broker


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _scheduling_context(request: Request) -> SchedulingContext:
    context: SchedulingContext = request.app.state.scheduling_context
    return context


StoreDep = Annotated[TaskStore, Depends(_store)]
BrokerDep = Annotated[QueueBroker, Depends(_broker)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SchedulingContextDep = Annotated[SchedulingContext, Depends(_scheduling_context)]
