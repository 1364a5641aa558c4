"""The task commands, over the API: schedule, task (and `task retry`), schedulers, and `tasks`
watch|list|abort|retry."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taskbroker.cli.api_calls import api_client
from taskbroker.cli.options import DEFAULT_URL, TokenOption, UrlOption, key_values, seconds
from taskbroker.cli.output import err, print_json
from taskbroker.client import Client, ClientError, RetryPolicy, TaskSpec


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
    delay: Annotated[
        str | None, typer.Option(help="Run no earlier than this from now: 30s, 5m, 2h, 1d or seconds.")
    ] = None,
    not_before: Annotated[
        str | None, typer.Option(help="Run no earlier than this time, ISO-8601 with timezone.")
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(min=0, max=999, help="Retry a failed attempt up to this many times (with backoff)."),
    ] = None,
    retry_delay: Annotated[
        str, typer.Option(help="Wait before the first retry (doubling each time, at most 5m), e.g. 10s.")
    ] = "1s",
    attempt_timeout: Annotated[
        str | None, typer.Option(help="Cancel an attempt that runs longer than this (it counts as failed).")
    ] = None,
) -> None:
    """Schedule one task (or --count N of them) and print it (or their ids)."""
    body: dict[str, Any] = json.loads(attributes) if attributes else {}
    if function:
        body["function"] = function
    if arg:
        body["args"] = [key_values([f"_={a}"], "--arg")["_"] for a in arg]
    if kwarg:
        body["kwargs"] = key_values(kwarg, "--kwarg")
    first_delay = seconds(retry_delay, "--retry-delay")
    spec = TaskSpec(
        scheduler,
        body,
        timeout,
        priority=priority,
        key=key,
        callback_url=callback_url,
        delay=None if delay is None else seconds(delay, "--delay"),
        not_before=not_before,
        retry=None
        if retries is None
        else RetryPolicy(
            max_attempts=retries + 1, initial_delay=first_delay, max_delay=max(first_delay, 300.0)
        ),
        attempt_timeout=None if attempt_timeout is None else seconds(attempt_timeout, "--attempt-timeout"),
    )
    if count > 1:
        if key is not None:
            err.print("[red]--key names one task; it cannot go with --count[/red]")
            raise typer.Exit(2)
        _schedule_many(url, token, spec, count, batch_size, wait)
        return
    with api_client(url, token) as client:
        task = client.schedule(
            scheduler,
            body,
            timeout,
            priority=priority,
            key=key,
            callback_url=callback_url,
            delay=spec.delay,
            not_before=spec.not_before,
            retry=spec.retry,
            attempt_timeout=spec.attempt_timeout,
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
    what: Annotated[
        str,
        typer.Argument(metavar="ID | retry ID", help="A task id to print, or `retry` and the id to re-run."),
    ],
    task_id: Annotated[str | None, typer.Argument(metavar="[ID]", show_default=False)] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    delay: Annotated[
        float | None, typer.Option(min=0, help="retry: seconds it waits (delayed) before it is published.")
    ] = None,
    not_before: Annotated[
        str | None, typer.Option(help="retry: publish it at this time (ISO-8601 with timezone), not before.")
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(help="retry: its new expiry (ISO-8601 with timezone); default: the server's."),
    ] = None,
) -> None:
    """Print one task; `task retry ID` re-runs a failed, timed-out or aborted one and prints it."""
    if what != "retry":
        if task_id is not None or delay is not None or not_before is not None or timeout is not None:
            err.print("[red]give one task id to print it, or `retry ID` to re-run it[/red]")
            raise typer.Exit(2)
        with api_client(url, token) as client:
            print_json(client.get(what).model_dump(mode="json"))
        return
    if task_id is None:
        err.print("[red]retry takes the id of the task to re-run: taskbroker task retry ID[/red]")
        raise typer.Exit(2)
    with api_client(url, token) as client:
        print_json(
            client.retry(task_id, delay=delay, not_before=not_before, timeout=timeout).model_dump(mode="json")
        )


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


SchedulerFilter = Annotated[
    str | None, typer.Option(help="Only this scheduler's tasks (default: every one the token may use).")
]
OlderThan = Annotated[
    float | None,
    typer.Option(min=0, help="Only tasks at least this many seconds old (created: abort; finished: retry)."),
]
BulkLimit = Annotated[int, typer.Option(min=1, max=10_000, help="Most tasks changed.")]


@tasks_app.command("list")
def tasks_list(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    scheduler: Annotated[str | None, typer.Option(help="Only this scheduler's tasks.")] = None,
    state: Annotated[
        str | None,
        typer.Option(
            help="pending, running or delayed (live tasks), or failed, timeout, aborted or "
            "complete (retained final tasks, newest first). Default: live tasks."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most tasks printed.")] = 100,
) -> None:
    """List tasks as a table, following the API's pages."""
    table = Table("id", "scheduler", "state", "attempts", "created", "finished", "error")
    shown = 0
    cursor: str | None = None
    with api_client(url, token) as client:
        while shown < limit:
            page = client.tasks(scheduler, state, limit=min(limit - shown, 1000), cursor=cursor)
            for t in page.tasks[: limit - shown]:
                finished = "" if t.finished_at is None else t.finished_at.isoformat(timespec="seconds")
                table.add_row(
                    str(t.id),
                    t.scheduler,
                    t.state.value,
                    str(t.attempts),
                    t.created_at.isoformat(timespec="seconds"),
                    finished,
                    (t.error or "")[:60],
                )
                shown += 1
            cursor = page.next_cursor
            if cursor is None:
                break
    Console().print(table)


@tasks_app.command("abort")
def tasks_abort(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    scheduler: SchedulerFilter = None,
    state: Annotated[
        str | None, typer.Option(help="Only tasks in this live state: pending, running or delayed.")
    ] = None,
    older_than: OlderThan = None,
    limit: BulkLimit = 1000,
) -> None:
    """Abort many live tasks at once (a client token: its own only); prints what changed."""
    with api_client(url, token) as client:
        print_json(
            client.abort_many(scheduler, state, older_than=older_than, limit=limit).model_dump(mode="json")
        )


@tasks_app.command("retry")
def tasks_retry(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    scheduler: SchedulerFilter = None,
    state: Annotated[
        str | None, typer.Option(help="Only tasks that ended so: failed, timeout or aborted (default: any).")
    ] = None,
    older_than: OlderThan = None,
    limit: BulkLimit = 1000,
    delay: Annotated[float | None, typer.Option(min=0, help="Seconds they wait (delayed) first.")] = None,
    not_before: Annotated[
        str | None, typer.Option(help="Publish them at this time (ISO-8601 with timezone), not before.")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="Their new expiry (ISO-8601 with timezone).")] = None,
) -> None:
    """Re-run many retained failed, timed-out or aborted tasks at once (a client token: its own
    only), newest first; prints what changed."""
    with api_client(url, token) as client:
        answer = client.retry_many(
            scheduler,
            state,
            older_than=older_than,
            limit=limit,
            delay=delay,
            not_before=not_before,
            timeout=timeout,
        )
    print_json(answer.model_dump(mode="json"))
