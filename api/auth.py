"""Who is calling: every endpoint but /health takes ``Authorization: Bearer <token>``.

401 when the token is missing or not valid (unknown, wrong, revoked, expired); 403 when the token
is valid but its role or scheduler list does not allow the call.

What a token may see is one rule (``Principal.sees``), answered the same way on every path:
naming a scheduler outside the token's list is 403, whether or not that scheduler exists (the
list is the token holder's own to know; the answer says nothing about other schedulers); a task
the token may not see is 404 with the very answer of an unknown task, so nobody learns that it
exists; listings and event streams leave such tasks out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from taskbroker.models import Task
from taskbroker.store import task_not_found
from taskbroker.token_models import Role
from taskbroker.tokens import Principal, TokenStore


def token_store(request: Request) -> TokenStore:
    tokens: TokenStore = request.app.state.tokens
    return tokens


class _Caller(HTTPBearer):
    """The bearer scheme and the role check as one dependency: FastAPI resolves each dependency
    of a request separately at a cost, and every endpoint pays this one. Being an HTTPBearer, it
    documents the scheme in OpenAPI as before."""

    def __init__(self, *roles: Role) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="An API token: `Authorization: Bearer tb_...`",
        )
        self._roles = roles
        self._allowed = ", ".join(role.value for role in roles)

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing token: send the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = await token_store(request).authenticate(token)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid token: it is unknown, revoked or expired; ask an admin for a new one",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if principal.role not in self._roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {principal.role.value} token may not do this: it needs the role {self._allowed}",
            )
        return principal


def require_scheduler(principal: Principal, scheduler: str) -> None:
    """403 unless the token may use ``scheduler``."""
    if not principal.may_use(scheduler):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token may not use the scheduler {scheduler!r}")


def require_every_scheduler(principal: Principal, what: str) -> None:
    """403 for a token limited to schedulers, on a read that covers them all (``what``)."""
    if principal.schedulers is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{what} cover every scheduler: this token is limited to some; use one that is not",
        )


def require_visible(principal: Principal, task: Task) -> Task:
    """``task`` if the caller may see it; otherwise the 404 of a task that does not exist."""
    if not principal.sees(task.scheduler, task.owner):
        raise task_not_found(task.id)
    return task


AnyCaller = Annotated[Principal, Depends(_Caller(Role.ADMIN, Role.CLIENT, Role.WORKER))]
Admin = Annotated[Principal, Depends(_Caller(Role.ADMIN))]
Scheduling = Annotated[Principal, Depends(_Caller(Role.ADMIN, Role.CLIENT))]
Monitoring = Annotated[Principal, Depends(_Caller(Role.ADMIN, Role.WORKER))]
