"""API tokens as they cross the wire: a token's role and the record the API shows of it.

The client and the API both import these; storing and checking tokens is taskbroker.tokens,
which imports them from here, so that the client never loads the store.
"""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from taskbroker.models import SchedulerName


class Role(enum.StrEnum):
    ADMIN = "admin"
    """Registers and deletes schedulers, manages tokens, sees and aborts every task. Never
    limited to schedulers: it could create itself an unlimited token anyway
    (taskbroker.tokens.scope_refused)."""
    CLIENT = "client"
    """Schedules tasks on the schedulers it is allowed, reads and aborts its own tasks."""
    WORKER = "worker"
    """Reads schedulers and tasks (for tooling next to consumers); changes nothing."""


class TokenRecord(BaseModel):
    """What the API shows of a token; never the secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    role: Role
    name: str = ""
    schedulers: list[SchedulerName] | None = Field(
        default=None, description="Schedulers this token may use; null means all."
    )
    created_at: datetime
    expires_at: datetime | None = None
