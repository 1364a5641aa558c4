"""Who is calling: every endpoint but /health takes ``Authorization: Bearer <token>``.

401 when the token is missing or not valid (unknown, wrong, revoked, expired); 403 when the token
is valid but its role or scheduler list does not allow the call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskbroker.tokens import Principal, Role, TokenStore

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer tb_...`")


def token_store(request: Request) -> TokenStore:
    tokens: TokenStore = request.app.state.tokens
    return tokens


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing token: send the header 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await token_store(request).authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid token: it is unknown, revoked or expired; ask an admin for a new one",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


def _require(*roles: Role) -> object:
    allowed = ", ".join(role.value for role in roles)

    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {principal.role.value} token may not do this: it needs the role {allowed}",
            )
        return principal

    return check


def require_scheduler(principal: Principal, scheduler: str) -> None:
    """403 unless the token may use ``scheduler``."""
    if not principal.may_use(scheduler):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token may not use the scheduler {scheduler!r}")


AnyCaller = Annotated[Principal, Depends(_require(Role.ADMIN, Role.CLIENT, Role.WORKER))]
Admin = Annotated[Principal, Depends(_require(Role.ADMIN))]
Scheduling = Annotated[Principal, Depends(_require(Role.ADMIN, Role.CLIENT))]
Monitoring = Annotated[Principal, Depends(_require(Role.ADMIN, Role.WORKER))]
