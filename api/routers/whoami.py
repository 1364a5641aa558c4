"""Who the calling token is: the dashboard's sign-in asks, to show what the role may use."""

from __future__ import annotations

from fastapi import APIRouter

from taskbroker.api.auth import AnyCaller
from taskbroker.api.schemas import AUTH_ERRORS, Caller

router = APIRouter(tags=["tokens"])


@router.get("/whoami", responses=AUTH_ERRORS)
async def whoami(principal: AnyCaller) -> Caller:
    """The token's id, role and schedulers (any valid token may ask about itself)."""
    schedulers = sorted(principal.schedulers) if principal.schedulers is not None else None
    return Caller(token_id=principal.token_id, role=principal.role, schedulers=schedulers)
