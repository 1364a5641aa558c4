"""The HTTP client of one client command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from taskbroker.cli.output import err
from taskbroker.client import Client, ClientError


@contextlib.contextmanager
def api_client(url: str, token: str | None) -> Iterator[Client]:
    """A client for one command: an error from the API ends the command with its message, exit 1."""
    try:
        with Client(url, token=token) as client:
            yield client
    except ClientError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
