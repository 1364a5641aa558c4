"""Whether the `taskbroker` CLI accepts a command line, checked by parsing only (nothing runs):
what compose.yaml and the Kubernetes manifests run must be commands the CLI knows."""

from __future__ import annotations

from typing import Any

import typer

from taskbroker.cli import app


def subcommand(name: str) -> Any:
    """The command object of ``taskbroker NAME`` (typer's own click, hence Any)."""
    root = typer.main.get_command(app)
    command = root.get_command(root.make_context("taskbroker", [name]), name)  # type: ignore[attr-defined]
    assert command is not None, f"unknown command {name!r}"
    return command


def has_option(command: str, option: str) -> bool:
    return any(option in param.opts for param in subcommand(command).params)


def check_accepted(args: list[str]) -> None:
    """Raise a usage error (a TyperException) unless the CLI accepts ``args``."""
    subcommand(args[0]).make_context(args[0], list(args[1:]))
