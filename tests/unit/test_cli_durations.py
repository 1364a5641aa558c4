"""How the CLI reads durations (--delay, --retry-delay, --attempt-timeout)."""

from __future__ import annotations

import pytest
import typer

from taskbroker.cli.options import seconds


@pytest.mark.parametrize(
    ("text", "expected"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("90", 90), ("1.5s", 1.5)]
)
def test_a_duration_reads_as_seconds(text: str, expected: float) -> None:
    assert seconds(text, "--delay") == expected


@pytest.mark.parametrize("text", ["", "soon", "-5s", "5x", "1h30m"])
def test_anything_else_exits_2(text: str) -> None:
    with pytest.raises(typer.Exit) as exited:
        seconds(text, "--delay")
    assert exited.value.exit_code == 2
