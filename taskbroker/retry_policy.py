"""How a failed attempt is retried: the ``RetryPolicy`` a task or its scheduler carries, the
backoff it gives, and its compact form in Redis.

Below both the client and the server (pydantic only), so ``taskbroker.client`` can build a
policy without loading a server library. docs/retries.md is the user's account of it.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ATTEMPTS = 1000
"""Attempts in all a policy may allow: far more than any sane backoff needs."""
MAX_DELAY = 366 * 86400.0
"""Seconds any delay (backoff, ``delay``, ``attempt_timeout``) may be: a year, well inside the
API's date range (taskbroker.models.LATEST) however it is added."""
DEFAULT_MAX_DELAY = 300.0
KEPT_ERRORS = 10
"""The errors of this many latest attempts are kept on a task (``Task.errors``)."""

Seconds = Annotated[float, Field(ge=0, le=MAX_DELAY, allow_inf_nan=False)]


class RetryPolicy(BaseModel):
    """Attempts in all (the first included) and the wait before each retry:
    ``min(max_delay, initial_delay * backoff_factor ** (n - 1))`` after the n-th failed attempt,
    drawn uniformly from [0, that] ("full jitter") when ``jitter`` is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(
        default=3, strict=True, ge=1, le=MAX_ATTEMPTS, description="Attempts in all; 1 means no retry."
    )
    initial_delay: Seconds = Field(default=1.0, description="Seconds before the first retry.")
    backoff_factor: float = Field(
        default=2.0, ge=1, le=100, allow_inf_nan=False, description="Each retry waits this many times longer."
    )
    max_delay: Seconds = Field(
        default=DEFAULT_MAX_DELAY,
        description="No retry waits longer than this (seconds). Default: 300, or initial_delay if longer.",
    )
    jitter: bool = Field(default=False, description="Wait a uniform random part of the delay (full jitter).")

    @model_validator(mode="before")
    @classmethod
    def _default_cap_not_below_start(cls, data: Any) -> Any:
        """Without a max_delay, a long initial_delay is its own cap (not a 422)."""
        if isinstance(data, dict) and "max_delay" not in data:
            initial = data.get("initial_delay")
            if (
                isinstance(initial, int | float)
                and not isinstance(initial, bool)
                and initial > DEFAULT_MAX_DELAY
            ):
                return {**data, "max_delay": initial}
        return data

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> RetryPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be at least initial_delay")
        return self

    def delay(self, failed_attempt: int, *, draw: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1 for the first) failed."""
        exponent = max(failed_attempt - 1, 0)
        # Capped before it can overflow: factor ** exponent grows past any max_delay quickly.
        base = self.initial_delay
        for _ in range(exponent):
            base *= self.backoff_factor
            if base >= self.max_delay:
                break
        base = min(base, self.max_delay)
        if self.jitter:
            return (draw or random).uniform(0.0, base)
        return base

    def retries_after(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` may be followed by another."""
        return attempt < self.max_attempts

    def compact(self) -> str:
        """The policy as the task record stores it: five space-separated fields (kept short, so
        the task's hash stays a compact listpack: taskbroker.store)."""
        return (
            f"{self.max_attempts} {self.initial_delay!r} {self.backoff_factor!r} "
            f"{self.max_delay!r} {int(self.jitter)}"
        )

    @classmethod
    def from_compact(cls, text: str) -> RetryPolicy:
        attempts, initial, factor, cap, jitter = text.split()
        return cls.model_construct(
            max_attempts=int(attempts),
            initial_delay=float(initial),
            backoff_factor=float(factor),
            max_delay=float(cap),
            jitter=jitter == "1",
        )


class AttemptError(BaseModel):
    """The error one failed attempt ended with."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    error: str
    at: datetime = Field(description="When the attempt ended.")
