"""The options several commands share, and how their KEY=VALUE pairs read."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from taskbroker.cli.output import err

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="TASKBROKER_URL", help="Base URL of the taskbroker API."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TASKBROKER_TOKEN",
        help="API token (prefer the TASKBROKER_TOKEN variable: options show up in process lists).",
        show_default=False,
    ),
]
MetricsPortOption = Annotated[
    int,
    typer.Option(
        "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on this port at /metrics; 0: off."
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Interface the metrics port binds (0.0.0.0 in containers).")
]

DEFAULT_URL = "http://127.0.0.1:8000"

_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str, flag: str) -> float:
    """A duration like ``30s``, ``5m``, ``2h``, ``1d`` or ``90`` (seconds) as seconds; exit 2
    for anything else."""
    match = _SECONDS.match(text.strip())
    if match is None:
        err.print(f"[red]{flag} takes a duration like 30s, 5m, 2h, 1d or 90 (seconds); got {text!r}[/red]")
        raise typer.Exit(2)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict, each value read as JSON when it is JSON, else as text;
    exit 2 for a pair without ``=``."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            err.print(f"[red]{flag} takes KEY=VALUE, got {pair!r}[/red]")
            raise typer.Exit(2)
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values
