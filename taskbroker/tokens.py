"""API tokens: who may call the API, in which role, on which schedulers.

A token is ``tb_<id>_<secret>``: the id finds its record, the secret (256 random bits) proves
it. Only a SHA-256 of the secret is stored (a slow password hash buys nothing for a secret this
random), compared in constant time. Records live in one Redis hash under the key prefix, so every
API replica sees a revocation at once.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import orjson
import redis.asyncio as aioredis

from taskbroker.models import utcnow
from taskbroker.script_calls import ScriptCalls
from taskbroker.store import load_script, redis_call
from taskbroker.token_models import Role, TokenRecord

TOKEN_PREFIX = "tb_"
ADMIN_TOKEN_ID = "admin"
"""The id of the bootstrap token from TASKBROKER_ADMIN_TOKEN."""


class _StoredToken(TokenRecord):
    secret_sha256: str


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    token_id: str
    role: Role
    schedulers: frozenset[str] | None

    def may_use(self, scheduler: str) -> bool:
        return self.schedulers is None or scheduler in self.schedulers

    def owns(self, owner: str | None) -> bool:
        return self.role is Role.ADMIN or owner == self.token_id

    def sees(self, scheduler: str, owner: str | None) -> bool:
        """Whether this caller may see a task (or its events) of ``scheduler`` scheduled by the
        token ``owner``: the one visibility rule of every read path. A token sees only the
        tasks of its schedulers; a client, of those, only the ones it scheduled."""
        if not self.may_use(scheduler):
            return False
        return self.role is not Role.CLIENT or owner == self.token_id


class AdminScopeRefused(ValueError):
    """An admin token with a scheduler list: refused, as no list could bind an admin."""


def scope_refused(role: Role, schedulers: Collection[str] | None) -> bool:
    """An admin token with a scheduler list (even an empty one). An admin registers and deletes
    schedulers and creates tokens, so a list would not limit it: it would only make an operator
    believe it does. Limited tokens are clients and workers."""
    return role is Role.ADMIN and schedulers is not None


def check_scope(role: Role, schedulers: Collection[str] | None) -> None:
    """AdminScopeRefused when ``scope_refused``, saying what to do instead."""
    if scope_refused(role, schedulers):
        raise AdminScopeRefused(
            "an admin token cannot be limited to schedulers (it manages all of them and creates "
            "tokens): leave schedulers out, or give the limited token the role client or worker"
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not token_id or not secret:
        return None
    return token_id, secret


class TokenStore:
    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        admin_token: str | None,
        *,
        script_calls: ScriptCalls | None = None,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._key = f"{key_prefix}:tokens"
        self._admin_digest = None if admin_token is None else _digest(admin_token)
        self._script_calls = script_calls or ScriptCalls(client)
        self._lookup = client.register_script(load_script("token"))

    @redis_call
    async def create(
        self,
        *,
        role: Role,
        name: str = "",
        schedulers: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token: its record, and the token itself (shown once, never stored).
        AdminScopeRefused for an admin token with a scheduler list."""
        check_scope(role, schedulers)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        stored = _StoredToken(
            id=token_id,
            role=role,
            name=name,
            schedulers=schedulers,
            created_at=utcnow(),
            expires_at=expires_at,
            secret_sha256=_digest(secret),
        )
        # On the replicas before the token is shown (TASKBROKER_REDIS_MIN_REPLICAS).
        await self._script_calls.replicated_command("HSET", self._key, token_id, stored.model_dump_json())
        return TokenRecord.model_validate(stored.model_dump(exclude={"secret_sha256"})), (
            f"{TOKEN_PREFIX}{token_id}_{secret}"
        )

    @redis_call
    async def list(self) -> list[TokenRecord]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._key))
        records = [
            TokenRecord.model_validate(
                _StoredToken.model_validate_json(v).model_dump(exclude={"secret_sha256"})
            )
            for v in raw.values()
        ]
        return sorted(records, key=lambda r: r.created_at)

    @redis_call
    async def revoke(self, token_id: str) -> bool:
        """True if the token existed; it stops working at once on every API replica (and, with
        TASKBROKER_REDIS_MIN_REPLICAS, a failover does not bring it back)."""
        return bool(await self._script_calls.replicated_command("HDEL", self._key, token_id))

    @redis_call
    async def authenticate(self, token: str) -> Principal | None:
        """The principal for ``token``, or None if it is unknown, wrong, revoked or expired."""
        if self._admin_digest is not None and hmac.compare_digest(_digest(token), self._admin_digest):
            return Principal(ADMIN_TOKEN_ID, Role.ADMIN, None)
        parts = _split(token)
        if parts is None:
            return None
        token_id, secret = parts
        raw = await self._script_calls.call(self._lookup, [self._prefix, token_id])
        if raw is None:
            return None
        stored = _parse_stored(raw)
        if not hmac.compare_digest(_digest(secret), stored.secret_sha256):
            return None
        if not stored.valid_now():
            return None
        return stored.principal

    @redis_call
    async def still_valid(self, token_ids: Collection[str]) -> set[str]:
        """Which of ``token_ids`` are still stored and not expired, in one round trip: what an
        open event stream re-checks about the token that opened it. The bootstrap admin token is
        not stored; it stays valid for as long as the process runs with it."""
        ids = sorted(set(token_ids) - {ADMIN_TOKEN_ID})
        found = cast(list[str | None], await self._redis.hmget(self._key, ids)) if ids else []
        valid = {
            i for i, raw in zip(ids, found, strict=True) if raw is not None and _parse_stored(raw).valid_now()
        }
        return valid | ({ADMIN_TOKEN_ID} & set(token_ids))


@dataclass(frozen=True, slots=True)
class _Verifier:
    """A stored token record, parsed: what authenticate() checks, and who the caller then is."""

    secret_sha256: str
    expires_at: datetime | None
    principal: Principal
    scope_refused: bool
    """An admin record with a scheduler list, as versions before check_scope() stored them."""

    def valid_now(self) -> bool:
        if self.scope_refused:
            return False
        return self.expires_at is None or self.expires_at > utcnow()


@functools.lru_cache(maxsize=4096)
def _parse_stored(raw: str) -> _Verifier:
    """Parsing and validating a record cost more than the rest of authenticate(). A record never
    changes once written (revoking deletes it, and the record is still read from Redis on every
    request), so its text parses to the same answer every time: parsed once per text."""
    stored = _StoredToken.model_validate(orjson.loads(raw))
    schedulers = None if stored.schedulers is None else frozenset(stored.schedulers)
    principal = Principal(stored.id, stored.role, schedulers)
    # Such a record is refused, never trusted with the schedulers its list said it must not use.
    refused = scope_refused(stored.role, stored.schedulers)
    return _Verifier(stored.secret_sha256, stored.expires_at, principal, refused)
