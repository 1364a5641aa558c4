"""API tokens, for admins: create (the only time a token is shown), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status

from taskbroker.api.auth import Admin, token_store
from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.api.schemas import AUTH_ERRORS, BODY_ERRORS, CreatedToken, ErrorBody, TokenRequest
from taskbroker.token_models import TokenRecord
from taskbroker.tokens import TokenStore

router = APIRouter(tags=["tokens"], route_class=JsonBodyRoute)

TokensDep = Annotated[TokenStore, Depends(token_store)]


@router.post("/token", status_code=status.HTTP_201_CREATED, responses={**AUTH_ERRORS, **BODY_ERRORS})
async def create_token(body: TokenRequest, principal: Admin, tokens: TokensDep) -> CreatedToken:
    record, token = await tokens.create(
        role=body.role, name=body.name, schedulers=body.schedulers, expires_at=body.expires_at
    )
    return CreatedToken(**record.model_dump(), token=token)


@router.get("/tokens", responses=AUTH_ERRORS)
async def list_tokens(principal: Admin, tokens: TokensDep) -> list[TokenRecord]:
    """Every stored token, without secrets (the bootstrap admin token is not stored)."""
    return await tokens.list()


@router.delete(
    "/token/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody, "description": "No such token"}},
)
async def revoke_token(
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], principal: Admin, tokens: TokensDep
) -> None:
    """Revoke a token: it stops working at once on every API replica."""
    if not await tokens.revoke(token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
