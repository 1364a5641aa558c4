"""Connections and settings reach handlers through Depends, never through globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from taskbroker.queue.base import QueueBroker
from taskbroker.settings import Settings
from taskbroker.store import TaskStore


async def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.backends.store
    return store


async def _broker(request: Request) -> QueueBroker:
    broker: QueueBroker = request.app.state.backends.broker
    return broker


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[TaskStore, Depends(_store)]
BrokerDep = Annotated[QueueBroker, Depends(_broker)]
SettingsDep = Annotated[Settings, Depends(_settings)]
