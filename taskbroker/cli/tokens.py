"""The token commands: create, list and revoke API tokens straight in Redis.

They are the one client side that needs Redis (TASKBROKER_REDIS_URL) rather than the API: the
first token must be made before any exists, and an operator with access to Redis needs no API
token to make it (nor a running API). Admins can do the same over HTTP: POST /token, GET
/tokens, DELETE /token/{id}."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taskbroker.backends import real_backends
from taskbroker.cli.config import load_settings
from taskbroker.cli.output import err, print_json
from taskbroker.errors import StoreUnavailable
from taskbroker.models import utcnow
from taskbroker.settings import Settings
from taskbroker.token_models import Role, TokenRecord
from taskbroker.tokens import AdminScopeRefused, TokenStore, check_scope

token_app = typer.Typer(
    help="Create, list and revoke API tokens, directly in Redis (TASKBROKER_REDIS_URL). Admins can "
    "do the same over HTTP: POST /token, GET /tokens, DELETE /token/{id}.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _expiry(expires: str | None) -> datetime | None:
    if expires is None:
        return None
    match = _DURATION.match(expires)
    if match is None:
        err.print(f"[red]--expires takes a duration like 30d, 12h, 90m or 3600s; got {expires!r}[/red]")
        raise typer.Exit(2)
    return utcnow() + timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


async def _with_tokens(settings: Settings, action: Callable[[TokenStore], Awaitable[Any]]) -> Any:
    # The process's backends, as every server process builds them; only the token store is used
    # (the queue is never connected).
    backends = real_backends(settings, connection_name="taskbroker-token")
    try:
        return await action(backends.tokens)
    finally:
        await backends.close()


def _token_call(settings: Settings, action: Callable[[TokenStore], Awaitable[Any]]) -> Any:
    try:
        return asyncio.run(_with_tokens(settings, action))
    except StoreUnavailable as exc:
        err.print(f"[red]{exc}: is TASKBROKER_REDIS_URL right?[/red]")
        raise typer.Exit(1) from exc


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="admin, client or worker.")],
    scheduler: Annotated[
        list[str] | None, typer.Option(help="Limit the token to this scheduler; repeatable. Default: all.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people: who or what uses the token.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime such as 30d, 12h or 90m. Default: no expiry.")
    ] = None,
) -> None:
    """Create a token and print it. It is shown this once only: only its hash is stored. An
    admin token takes no --scheduler: nothing could hold an admin to it."""
    try:
        check_scope(role, scheduler)
    except AdminScopeRefused as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = load_settings()
    expires_at = _expiry(expires)
    record, token = _token_call(
        settings,
        lambda tokens: tokens.create(
            role=role, name=name, schedulers=scheduler or None, expires_at=expires_at
        ),
    )
    print_json({**record.model_dump(mode="json"), "token": token})
    err.print("Store the token now: it cannot be shown again.")


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    settings = load_settings()
    records: list[TokenRecord] = _token_call(settings, lambda tokens: tokens.list())
    table = Table("id", "role", "name", "schedulers", "created", "expires")
    for r in records:
        table.add_row(
            r.id,
            r.role.value,
            r.name,
            "all" if r.schedulers is None else ", ".join(r.schedulers),
            r.created_at.isoformat(timespec="seconds"),
            "never" if r.expires_at is None else r.expires_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")]) -> None:
    """Revoke a token: every API replica refuses it from now on."""
    settings = load_settings()
    if not _token_call(settings, lambda tokens: tokens.revoke(token_id)):
        err.print(f"[red]no token with id {token_id!r}[/red]")
        raise typer.Exit(1)
    err.print(f"revoked {token_id}")
