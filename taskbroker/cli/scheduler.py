"""`taskbroker scheduler pause|resume NAME`, over the API: how an operator drains a queue before
a deploy (docs/operations.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from taskbroker.cli.api_calls import api_client
from taskbroker.cli.options import DEFAULT_URL, TokenOption, UrlOption
from taskbroker.cli.output import print_json

scheduler_app = typer.Typer(help="Pause and resume a scheduler's consumers (admin).", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="The scheduler's name.")]


@scheduler_app.command("pause")
def pause(name: NameArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Stop the scheduler's consumers taking new tasks (within one heartbeat); running tasks go
    on and new tasks wait in the queue. Prints the scheduler."""
    with api_client(url, token) as client:
        print_json(client.pause_scheduler(name).model_dump(mode="json"))


@scheduler_app.command("resume")
def resume(name: NameArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Let a paused scheduler's consumers take tasks again. Prints the scheduler."""
    with api_client(url, token) as client:
        print_json(client.resume_scheduler(name).model_dump(mode="json"))
