"""A module no consumer in the tests allows: the allow-list tests name it in a task and then check
that it was never imported, so nothing at module level here may ever run in a consumer."""

from __future__ import annotations

IMPORTED = True


def touch() -> str:
    return "this must never run"
