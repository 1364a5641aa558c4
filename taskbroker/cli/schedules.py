"""The recurring-schedule commands, over the API: list (no subcommand), run, load."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taskbroker.cli.api_calls import api_client
from taskbroker.cli.options import DEFAULT_URL, TokenOption, UrlOption
from taskbroker.cli.output import err, print_json

schedules_app = typer.Typer(
    help="Recurring schedules: list them (no subcommand), force a run, load a YAML file of them. "
    "The `schedule-firer` process fires them.",
)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


@schedules_app.callback(invoke_without_command=True)
def schedules_list(ctx: typer.Context, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Without a subcommand: a table of schedules (id, name, scheduler, trigger, next run, last state)."""
    if ctx.invoked_subcommand is not None:
        return
    from taskbroker.triggers import describe

    with api_client(url, token) as client:
        rows = client.schedules_list()
    table = Table("id", "name", "scheduler", "trigger", "next run", "last state", "runs")
    for s in rows:
        table.add_row(
            str(s.id),
            s.name,
            s.scheduler,
            describe(s.trigger_spec(None)),
            _when(s.next_run_at) if s.enabled else "paused",
            s.last_state or "-",
            str(s.runs),
        )
    Console().print(table)


@schedules_app.command("run")
def schedules_run(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (see `taskbroker schedules`).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Force a run now (the next fire time is unchanged) and print the task it created."""
    with api_client(url, token) as client:
        print_json(client.schedule_run(schedule_id).model_dump(mode="json"))


@schedules_app.command("load")
def schedules_load(
    file: Annotated[Path, typer.Argument(help="A YAML file with a list under `schedules:`.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Apply a file of schedules idempotently (matched by name): create new ones, update changed
    ones, leave the rest. Prints one line per schedule: created, updated or unchanged."""
    from taskbroker.schedule_file import Action, ScheduleFileError, plan, read_schedule_file

    try:
        declared = read_schedule_file(file)
    except ScheduleFileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    with api_client(url, token) as client:
        for change in plan(declared, client.schedules_list()):
            if change.action is Action.CREATE:
                schedule_id = str(client.schedule_create(change.spec).id)
            elif change.action is Action.UPDATE:
                assert change.schedule_id is not None
                schedule_id = str(client.schedule_update(change.schedule_id, change.fields).id)
            else:
                schedule_id = change.schedule_id or ""
            detail = f" ({', '.join(sorted(change.fields))})" if change.fields else ""
            sys.stdout.write(f"{change.action.value} {change.name} {schedule_id}{detail}\n")
