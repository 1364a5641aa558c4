"""The task commands, over the API: schedule, task, schedulers and `tasks watch`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taskbroker.cli.api_calls import api_client
from taskbroker.cli.options import DEFAULT_URL, TokenOption, UrlOption, key_values
from taskbroker.cli.output import err, print_json
from taskbroker.client import Client, ClientError, TaskSpec


def schedule(
    scheduler: Annotated[str, typer.Argument(help="Scheduler to run the task.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    function: Annotated[
        str | None,
        typer.Option(help="Inline callable as module:function, e.g. taskbroker.runtimes.builtin:echo."),
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option(help="Positional argument (JSON or text); repeatable.")
    ] = None,
    kwarg: Annotated[
        list[str] | None, typer.Option(help="Keyword argument KEY=VALUE (JSON or text); repeatable.")
    ] = None,
    attributes: Annotated[
        str | None, typer.Option(help="All attributes as a JSON object (for runtimes other than inline).")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="Expiry time, ISO-8601 with timezone.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final state and print it.")] = False,
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 (lowest, default) to 9 (highest).")] = 0,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key: while a task holding it is live, print that task.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POST the final task here (host and port on TASKBROKER_WEBHOOK_HOSTS).")
    ] = None,
    count: Annotated[
        int, typer.Option(min=1, help="Schedule this many copies, in batches, with a progress bar.")
    ] = 1,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Tasks per batch with --count.")] = 1000,
) -> None:
    """Schedule one task (or --count N of them) and print it (or their ids)."""
    body: dict[str, Any] = json.loads(attributes) if attributes else {}
    if function:
        body["function"] = function
    if arg:
        body["args"] = [key_values([f"_={a}"], "--arg")["_"] for a in arg]
    if kwarg:
        body["kwargs"] = key_values(kwarg, "--kwarg")
    if count > 1:
        if key is not None:
            err.print("[red]--key names one task; it cannot go with --count[/red]")
            raise typer.Exit(2)
        spec = TaskSpec(scheduler, body, timeout, priority=priority, callback_url=callback_url)
        _schedule_many(url, token, spec, count, batch_size, wait)
        return
    with api_client(url, token) as client:
        task = client.schedule(
            scheduler, body, timeout, priority=priority, key=key, callback_url=callback_url
        )
        if wait:
            with err.status(f"waiting for task {task.id}..."):
                task = client.wait(task.id)
    print_json(task.model_dump(mode="json"))
    if wait and task.state.value != "complete":
        raise typer.Exit(1)


def _schedule_many(
    url: str, token: str | None, spec: TaskSpec, count: int, batch_size: int, wait: bool
) -> None:
    from taskbroker.cli.watching import schedule_with_progress

    if wait:
        err.print("[red]--wait takes one task; follow many with `taskbroker tasks watch`[/red]")
        raise typer.Exit(2)
    with api_client(url, token) as client:
        tasks = schedule_with_progress(
            client, (spec for _ in range(count)), total=count, batch_size=batch_size, console=err
        )
    sys.stdout.write("".join(f"{t.id}\n" for t in tasks))


def task(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Print one task."""
    with api_client(url, token) as client:
        print_json(client.get(task_id).model_dump(mode="json"))


def schedulers(url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """List schedulers with queue depth, consumers and whether they are paused: what operators scale by."""
    with api_client(url, token) as client:
        rows = client.schedulers()
    table = Table("name", "runtime", "waiting", "consumers", "live tasks", "paused", "description")
    for s in rows:
        table.add_row(
            s.name,
            s.runtime,
            "?" if s.messages is None else str(s.messages),
            "?" if s.consumers is None else str(s.consumers),
            str(s.live_tasks),
            "paused" if s.paused else "no",
            s.description,
        )
    Console().print(table)


tasks_app = typer.Typer(help="Follow tasks through the API.", no_args_is_help=True)


@tasks_app.command("watch")
def tasks_watch(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    scheduler: Annotated[str | None, typer.Option(help="Only this scheduler's tasks.")] = None,
) -> None:
    """Print a line for every task state change as it happens (Ctrl-C stops)."""
    from taskbroker.cli.watching import watch

    try:
        with Client(url, token=token, timeout=10) as client:
            watch(client, Console(highlight=False), scheduler=scheduler)
    except ClientError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        return
